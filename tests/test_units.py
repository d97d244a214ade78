"""Pure modules, no infrastructure: coordinate systems, settings, keys."""

from __future__ import annotations

import pytest

from alerts import keys as alerts_keys
from devices import keys as devices_keys
from geofences import keys as geofences_keys
from locator.core import crs
from locator.core.errors import ConfigError
from locator.core.settings import load_settings


@pytest.mark.parametrize(
    ("lat", "lon"), [(30.5112, 120.6853), (39.9087, 116.3975), (22.5431, 114.0579)]
)
def test_gcj02_and_bd09_round_trip_to_wgs84_within_a_centimetre(lat: float, lon: float) -> None:
    for system in ("gcj02", "bd09"):
        shown = crs.from_wgs84(lat, lon, system)  # type: ignore[arg-type]
        assert crs.haversine_m(*shown, lat, lon) > 100  # the famous offset is real
        back = crs.to_wgs84(*shown, system)  # type: ignore[arg-type]
        assert crs.haversine_m(*back, lat, lon) < 0.01


def test_gcj02_offset_around_haining_is_about_500_m() -> None:
    shifted = crs.wgs84_to_gcj02(30.5112, 120.6853)
    assert 350 < crs.haversine_m(*shifted, 30.5112, 120.6853) < 650


def test_no_offset_outside_china() -> None:
    assert crs.wgs84_to_gcj02(51.5, -0.12) == (51.5, -0.12)


def test_haversine_one_degree_of_latitude() -> None:
    assert crs.haversine_m(30.0, 120.0, 31.0, 120.0) == pytest.approx(111_195, rel=1e-3)


def test_per_elder_keys_share_one_hash_tag() -> None:
    elder_keys = [
        devices_keys.elder(7),
        devices_keys.elder_device(7),
        devices_keys.track(7, "b-1"),
        geofences_keys.zones(7),
        alerts_keys.pair(7),
    ]
    assert all("{e:7}" in key for key in elder_keys)
    assert devices_keys.track(7, "b-1") == "hw:{e:7}:track:b-1"


def test_settings_defaults_match_the_brief(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOMEWARD_REDIS_URL", "HOMEWARD_HTTP_PORT", "HOMEWARD_RESPOND_SLA_S"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.http_host, s.http_port, s.timezone, s.locale) == (
        "127.0.0.1",
        8000,
        "Asia/Shanghai",
        "zh-CN",
    )
    assert (s.respond_sla_s, s.onsite_sla_s, s.voice_after_s, s.offline_after_s) == (
        180,
        600,
        90,
        1200,
    )
    assert s.track_retention_s == 2_592_000
    assert s.map_tiles == "osm"


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWARD_ONSITE_SLA_S", "900")
    monkeypatch.setenv("HOMEWARD_MAP_TILES", "https://tiles.example/{z}/{x}/{y}.png")
    s = load_settings()
    assert s.onsite_sla_s == 900
    assert s.map_tiles.endswith("{y}.png")


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOMEWARD_LOCALE", "fr")
    with pytest.raises(ConfigError, match="HOMEWARD_LOCALE"):
        load_settings()


def test_owntracks_settings_round_trip_through_the_import_url() -> None:
    import base64
    import json

    from devices.registry import owntracks

    config = owntracks.app_config(host="hw.example.cn", port=8883, tls=True, external_id="li/phone")
    url = owntracks.config_url(config)
    assert json.loads(base64.b64decode(url.removeprefix("owntracks:///config?inline="))) == config
    assert config["pubTopicBase"] == "owntracks/%u/%d" and config["tid"] == "ph"
    qr = owntracks.qr_data_uri(url)
    assert qr.startswith("data:image/svg+xml") and "path" in qr
