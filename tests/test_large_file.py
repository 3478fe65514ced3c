"""A 2 GB sealed bid opens in constant memory (peak RSS under 200 MB), checked in a child process.

The bid is sealed in this process; ``bidbridge open`` then runs in a fresh interpreter whose own
peak resident set size is reported by the kernel (``getrusage``), so nothing of the test counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.pki import CODE_A, Pki, seal_as, summary_for, write_key

SIZE = 2 * 1024**3
PEAK_RSS_LIMIT = 200 * 1024 * 1024

# VmHWM of this process's own memory: unlike ru_maxrss, which Linux carries over an exec from the
# forking parent (a big pytest process), it starts afresh with the new program.
_CHILD = """
import sys
from server.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as f:
    hwm = next(line for line in f if line.startswith("VmHWM:"))
print(int(hwm.split()[1]) * 1024)
sys.exit(rc)
"""


def test_two_gigabyte_bid_opens_with_peak_rss_under_200_mb(pki: Pki, tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "summary.json").write_text(json.dumps(summary_for(CODE_A)))
    with (pkg / "drawings.bin").open("wb") as f:
        f.truncate(SIZE)  # sparse: the bytes are real zeros to every reader, cheap to make
    pair = pki.bidder_rsa
    bid = tmp_path / "bid.p7m"
    seal_as(pair, pkg, bid)
    (pkg / "drawings.bin").unlink()
    assert bid.stat().st_size > SIZE

    key = write_key(tmp_path / "enc.key", pair.encryption)
    out = tmp_path / "opened.zip"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            "open",
            "--in",
            str(bid),
            "--key",
            str(key),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.returncode == 0, proc.stderr
    peak = int(proc.stdout.strip().splitlines()[-1])
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
    assert out.stat().st_size > SIZE
