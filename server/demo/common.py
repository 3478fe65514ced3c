"""What the demo's parts share: the failure they raise and how a step is announced."""

from __future__ import annotations

from crypto.errors import BidBridgeError


class DemoFailed(BidBridgeError):
    code = "DEMO_FAILED"
    zh = "演示步骤失败"
    en = "a demo step failed"


def step(title: str) -> None:
    print(f"\n== {title} ==", flush=True)
