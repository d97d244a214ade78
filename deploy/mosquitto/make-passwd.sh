#!/bin/sh
# Builds the broker's password file at every `docker compose up` (the mosquitto-auth
# service), so no password is ever committed: the four service users get the passwords
# from the environment, and each bracelet or phone the line `homeward mqtt-credentials`
# printed for it, from deploy/mosquitto/devices/*.passwd (see deploy/README.md).
set -eu
out=${PASSWD_FILE:-/mosquitto/auth/passwd}
devices=${DEVICES_DIR:-/init/devices}
umask 077
tmp="$out.new"
rm -f "$tmp"
: "${HOMEWARD_MQTT_INGEST_PASSWORD:?}" "${HOMEWARD_MQTT_API_PASSWORD:?}"
: "${HOMEWARD_MQTT_TICKER_PASSWORD:?}" "${HOMEWARD_MQTT_HEALTH_PASSWORD:?}"
mosquitto_passwd -c -b "$tmp" homeward-ingest "$HOMEWARD_MQTT_INGEST_PASSWORD"
mosquitto_passwd -b "$tmp" homeward-api "$HOMEWARD_MQTT_API_PASSWORD"
mosquitto_passwd -b "$tmp" homeward-ticker "$HOMEWARD_MQTT_TICKER_PASSWORD"
mosquitto_passwd -b "$tmp" homeward-health "$HOMEWARD_MQTT_HEALTH_PASSWORD"
# Device lines must be hashed ($7$) and must not name a service user: a device file
# cannot grant itself the ingest's rights. Anything else is reported and skipped.
for file in "$devices"/*.passwd; do
    [ -e "$file" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in '' | '#'*) continue ;; esac
        if printf '%s\n' "$line" | grep -Eq '^[A-Za-z0-9_.@-]{1,64}:\$7\$[0-9]+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$' \
            && ! printf '%s\n' "$line" | grep -q '^homeward-'; then
            printf '%s\n' "$line" >> "$tmp"
        else
            echo "skipped a bad line in $file: ${line%%:*}" >&2
        fi
    done < "$file"
done
# The broker drops root and re-reads the file on SIGHUP as the mosquitto user.
if [ "$(id -u)" = 0 ] && id mosquitto > /dev/null 2>&1; then
    chown mosquitto:mosquitto "$tmp"
fi
mv -f "$tmp" "$out"
echo "mosquitto-auth: $(wc -l < "$out") users in $out"
