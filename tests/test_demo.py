"""`bidbridge demo --exit`: the README's first command (an opening, then its evaluation), as a test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.softhsm import softhsm_available


def test_demo_runs_an_opening_and_an_evaluation_and_verifies_both_archives(tmp_path: Path) -> None:
    if not softhsm_available():
        pytest.fail("SoftHSM2 is missing: `make test` installs softhsm2 (the demo needs it)")
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.cli",
            "demo",
            "--exit",
            "--factor",
            "120",
            "--out",
            str(out),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = result.stdout
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "演示完成 / demo complete" in text
    assert text.count("解密成功 decrypted") == 4
    assert "bid_revoked (no_key_sent)" in text
    assert "异议 #1 已答复 / objection #1 answered" in text
    assert "签名 signatures: host, server, supervisor" in text
    assert "验证通过 / verified" in text
    assert (out / "archive.zip").is_file()
    # the evaluation that follows the opening
    assert "导入专家 imported 10000 experts" in text
    assert "主持人仅见人数 host sees only: 5 members, 2 rooms" in text
    assert text.count("签到 @ ") == 5
    assert "推荐中标候选人 / Recommended candidates:" in text
    assert "不同意 / disagrees:" in text
    assert text.count("验证通过 / verified") == 2
    assert "— 一致 / matches" in text
    assert (out / "evaluation-archive.zip").is_file()
    # the four pages, each with a one-time link that the demo opened as a browser would
    for title in ("bidder hall", "host console", "expert desk", "supervisor wall"):
        assert f"/ {title}:" in text, title
    assert text.count("/web/enter.html#code=") == 4
    assert "页面链接已验证 / page links checked: 4 (bidder, host, expert, supervisor)" in text
    assert "bidbridge link --server" in text
    assert "run `bidbridge demo` without --exit" in text
    assert (out / "keys" / "supervisor.key.pem").is_file()
