"""The README's screenshots of the browser pages: the bidder hall and the host console at their
key step (the opening table published), at 1366x768, saved as PNG files.

It runs the same flow as the page test (``tests/test_pages.py``: a whole opening through two
bidder pages and the host page in Debian's Chromium, against the in-process server) with
``BIDBRIDGE_README_SHOTS`` set, so the pictures show exactly what the test asserts.

    .venv/bin/python scripts/screenshots.py            # writes docs/img/bidder-hall.png, host-console.png
    .venv/bin/python scripts/screenshots.py --out DIR
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("bidder-hall.png", "host-console.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "img"), help="folder for the PNG files (docs/img)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (out / name).unlink(missing_ok=True)
    env = {**os.environ, "BIDBRIDGE_README_SHOTS": str(out)}
    test = "tests/test_pages.py::test_full_opening_through_the_pages"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        print(
            f"ERROR SCREENSHOTS_FAILED: 页面测试失败 / the page test failed ({test})",
            file=sys.stderr,
        )
        return 2
    for name in NAMES:
        path = out / name
        if not path.is_file():
            print(f"ERROR SCREENSHOTS_FAILED: 未生成 / not written: {path}", file=sys.stderr)
            return 2
        print(f"{path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
