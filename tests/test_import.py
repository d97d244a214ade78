"""CSV bulk import of elders and devices: good rows land, bad rows are reported per column."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import Api, both_backends

HEADER = "name,home_lat,home_lon,address,guardian_name,guardian_phone,guardian_relation,guardian2_name,guardian2_phone,device_id,protocol,external_id,owner\n"
ROWS = [
    "张阿婆,30.5112,120.6853,西山社区1幢,李明,+8613800138000,son,李红,+8613800138001,bracelet-1,native,,fam-a",
    "王阿公,30.5120,120.6860,西山社区2幢,王强,+8613800138002,son,,,ot-1,owntracks,wang/phone,",
    "坏纬度,95,120.68,,赵,+8613800138003,,,,bracelet-3,,,",
    "坏电话,30.51,120.68,,钱,13800138004,,,,bracelet-4,,,",
    "重复设备,30.51,120.68,,孙,+8613800138005,,,,bracelet-1,,,",
    "缺外部号,30.51,120.68,,周,+8613800138006,,,,ot-2,owntracks,,",
    "无设备,30.51,120.68,,吴,+8613800138007,,,,,,,",
]


@both_backends
async def test_import_reports_every_row_and_registers_the_good_ones(api: Api) -> None:
    csv_text = HEADER + "\n".join(ROWS) + "\n"
    response = await api.http.post(
        "/api/v1/import/elders",
        content=csv_text.encode(),
        headers={**api.auth("admin"), "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["created"], report["failed"]) == (3, 4)
    by_row = {r["row"]: r for r in report["rows"]}
    assert by_row[2]["status"] == "created" and by_row[2]["device_id"] == "bracelet-1"
    assert by_row[3]["device_id"] == "ot-1"
    assert [e["column"] for e in by_row[4]["errors"]] == ["home_lat"]
    assert [e["column"] for e in by_row[5]["errors"]] == ["guardian_phone"]
    assert by_row[6]["errors"] == [{"column": "device_id", "message": "also on row 2"}]
    assert [e["column"] for e in by_row[7]["errors"]] == ["external_id"]
    assert by_row[8]["status"] == "created" and by_row[8]["device_id"] is None

    elder = (
        await api.http.get(
            f"/api/v1/elders/{by_row[2]['elder_id']}", headers=api.auth("guardian_a")
        )
    ).json()
    assert elder["device_id"] == "bracelet-1"
    assert [g["name"] for g in elder["guardians"]] == ["李明", "李红"]
    names = [
        e["name"]
        for e in (await api.http.get("/api/v1/elders", headers=api.auth("admin"))).json()["items"]
    ]
    assert names == ["张阿婆", "王阿公", "无设备"]

    # Importing the same file again registers nothing twice.
    again = (
        await api.http.post(
            "/api/v1/import/elders",
            content=csv_text.encode(),
            headers={**api.auth("admin"), "Content-Type": "text/csv"},
        )
    ).json()
    assert [r["status"] for r in again["rows"]][:2] == ["error", "error"]


@both_backends
async def test_import_rejects_unknown_columns_and_non_staff(api: Api) -> None:
    bad = "name,home_lat,home_lon,guardian_name,guardian_phone,shoe\nx,1,1,a,+8613800138000,42\n"
    report = (
        await api.http.post(
            "/api/v1/import/elders",
            content=bad.encode(),
            headers={**api.auth("admin"), "Content-Type": "text/csv"},
        )
    ).json()
    assert report["rows"][0]["errors"] == [{"column": "shoe", "message": "unknown column"}]
    denied = await api.http.post(
        "/api/v1/import/elders",
        content=bad.encode(),
        headers={**api.auth("guardian_a"), "Content-Type": "text/csv"},
    )
    assert denied.status_code == 403


def test_cli_import_uses_the_configured_redis(redis_url: str, tmp_path: Path) -> None:
    from tests.servers import clean_homeward_keys

    clean_homeward_keys(redis_url)
    path = tmp_path / "elders.csv"
    path.write_text(HEADER + ROWS[0] + "\n" + ROWS[2] + "\n", encoding="utf-8")
    env = {
        "HOMEWARD_REDIS_URL": redis_url,
        "HOMEWARD_DATA_DIR": str(tmp_path / "data"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "locator", "import", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "row 2: created elder 1 with device bracelet-1" in result.stdout
    assert "row 3: error: home_lat:" in result.stdout
    assert "1 created, 1 failed" in result.stdout
