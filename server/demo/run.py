"""``bidbridge demo``: a complete no-show opening on the embedded default, accelerated clock.

Five bidders with certificates from two CAs (one keeps its keys on a SoftHSM token) seal, upload,
rehearse and decrypt online through the bidder agent; one cannot decrypt and ends revoked; an
objection is raised and answered; the table and the record are printed; the archive is exported
and verified offline. Then the evaluation of the same lot (``server.demo.evaluation``). At the end
the clock slows to real time and the demo prints the four pages (bidder hall, host console, expert
desk, supervisor wall) with one-time links; the server keeps running (Ctrl-C stops it), or, with
``--exit``, the demo opens each link itself (redeems it and loads the page) and exits.

``bidbridge link`` asks a running server for a fresh link as one of the demo's parties (or with
any CA key and certificate): links work once and for one minute.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.bid import seal_bid
from crypto.envelope import Recipient
from crypto.errors import BidBridgeError
from crypto.keys import KeyTransportPadding, PrivateKeyHandle, SoftwareKey
from crypto.token import (
    Pkcs11Uri,
    generate_key_on_token,
    open_token_key,
    store_certificate_on_token,
)
from crypto.trust import TrustStore
from room_client.agent import Credentials, HallClient, HallFollower
from room_client.evaluation import EvalClient
from schemas.common import uscc_check_char
from server.app import Settings, build_app, build_hub
from server.audit.archive import verify_archive
from server.audit.export import export_session
from server.demo.common import DemoFailed, step
from server.demo.evaluation import run_evaluation
from server.identity import ServerIdentity, cert_pem

SOFTHSM_MODULE = os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so")
PROJECT = "JS-2026-0101"


def _code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


BIDDERS = [
    # name, credit code, CA, key type, price (fen), on a token
    ("甲建设工程有限公司", _code("91110000MA01AAAA1"), "A", "rsa2048", 128_000_000_00, False),
    ("乙路桥集团有限公司", _code("91320000MA02BBBB2"), "B", "ec-p256", 125_500_000_00, False),
    ("丙市政工程有限公司", _code("91440300MA03CCCC3"), "A", "rsa2048", 131_250_000_00, False),
    ("丁水利水电有限公司", _code("91510100MA04DDDD4"), "B", "ec-p256", 127_880_000_00, False),
    ("戊城建集团有限公司", _code("91330100MA05EEEE5"), "A", "ec-p256", 129_990_000_00, True),
]
FAILS = 2  # index of the bidder whose CA key was replaced after sealing: it cannot decrypt


class DemoClock:
    """Accelerated while the demo waits for time to pass; real time while its parties act
    (:meth:`acting`), so that no step depends on how fast the machine is (a loaded machine took
    longer than the fifteen clock minutes, seven real seconds at x120, to seal and upload five
    bids); real time for good from :meth:`settle` on, so that the pages a person opens
    afterwards live as long as they would on a real server (a one-time link a minute, a token
    half an hour) instead of a sixtieth of it."""

    def __init__(self, factor: float) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = factor
        self._base = datetime.now(UTC)
        self._real = time.time()
        self._rate = factor
        self._settled = False
        self.on_speed_change: Callable[[], None] | None = None
        """Called when the clock speeds up again (the scheduler's sleep is then too long)."""

    def now(self) -> datetime:
        return self._base + timedelta(seconds=(time.time() - self._real) * self._rate)

    @property
    def rate(self) -> float:
        return self._rate

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._rate)

    def _rebase(self, rate: float) -> None:
        self._base, self._real, self._rate = self.now(), time.time(), rate

    def settle(self) -> None:
        if not self._settled:
            self._rebase(1.0)
            self._settled = True

    @contextlib.contextmanager
    def acting(self) -> Iterator[None]:
        """Real time while the parties act (seal, upload, decrypt, confirm), accelerated again
        afterwards: the waits of the story stay short, its deadlines are never raced."""
        if self._settled:
            yield
            return
        self._rebase(1.0)
        try:
            yield
        finally:
            if not self._settled:
                self._rebase(self.factor)
                if self.on_speed_change is not None:
                    self.on_speed_change()


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _softhsm(out: Path) -> str:
    """A SoftHSM token for the fifth bidder, in the demo folder (the system store is untouched)."""
    tokens = out / "softhsm" / "tokens"
    tokens.mkdir(parents=True)
    conf = out / "softhsm" / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "demo-bidder",
            "--pin",
            "1234",
            "--so-pin",
            "12345678",
        ],
        check=True,
        capture_output=True,
    )
    return str(Pkcs11Uri(token="demo-bidder", module_path=SOFTHSM_MODULE, pin_value="1234"))


class World:
    """The parties of the demo and their keys."""

    def __init__(self, out: Path, now: datetime) -> None:
        self.out = out
        self.root_a = ca.create_root_ca(
            "Demo CA A Root", organization="Demo CA A", key_type="rsa2048"
        )
        self.root_b = ca.create_root_ca(
            "Demo CA B Root", organization="Demo CA B", key_type="ec-p256"
        )
        self.sub_b = ca.create_intermediate_ca(
            self.root_b, "Demo CA B Issuing CA 1", key_type="ec-p256"
        )
        self.trust = TrustStore(
            [self.root_a.certificate, self.root_b.certificate], [self.sub_b.certificate]
        )
        for issuer in (self.root_a, self.root_b, self.sub_b):
            self.trust.add_crl(
                ca.issue_crl(
                    issuer,
                    [],
                    this_update=now - timedelta(hours=1),
                    next_update=now + timedelta(days=30),
                    crl_number=1,
                )
            )
        platform = ca.issue_person(
            self.root_a, name="平台签章", role="centre", person_id="PLATFORM1", key_type="ec-p256"
        )
        assert platform.key is not None
        self.identity = ServerIdentity(SoftwareKey(platform.key), platform.certificate)
        self.staff = {
            role: self._person(name, role, pid)
            for role, name, pid in (
                ("centre", "交易中心管理员", "C001"),
                ("host", "主持人王", "H001"),
                ("supervisor", "监管人员李", "S001"),
            )
        }
        self.token_uri = _softhsm(out)
        self.bidders: list[dict[str, Any]] = [self._company(i, *b) for i, b in enumerate(BIDDERS)]

    def _person(self, name: str, role: str, pid: str) -> Credentials:
        issued = ca.issue_person(
            self.root_b if role == "supervisor" else self.root_a,
            name=name,
            role=role,
            person_id=pid,
            key_type="ec-p256",
        )  # type: ignore[arg-type]
        assert issued.key is not None
        return Credentials(SoftwareKey(issued.key), issued.certificate)

    def _company(
        self, i: int, name: str, code: str, ca_name: str, key_type: str, price: int, on_token: bool
    ) -> dict[str, Any]:
        issuer = self.root_a if ca_name == "A" else self.sub_b
        chain = [self.sub_b.certificate] if ca_name == "B" else []
        sign_key: PrivateKeyHandle
        dec_key: PrivateKeyHandle
        if on_token:
            sign_pub = generate_key_on_token(self.token_uri, key_type, "sign", b"\x01")  # type: ignore[arg-type]
            enc_pub = generate_key_on_token(self.token_uri, key_type, "enc", b"\x02")  # type: ignore[arg-type]
            pair = ca.issue_company_pair(
                issuer,
                credit_code=code,
                company_name=name,
                signing_public_key=sign_pub,
                encryption_public_key=enc_pub,
            )
            store_certificate_on_token(self.token_uri, pair.signing.certificate, "sign", b"\x01")
            store_certificate_on_token(self.token_uri, pair.encryption.certificate, "enc", b"\x02")
            base = Pkcs11Uri.parse(self.token_uri)
            sign_key = open_token_key(
                str(
                    Pkcs11Uri(
                        token=base.token,
                        object="sign",
                        type="private",
                        module_path=base.module_path,
                        pin_value="1234",
                    )
                )
            )
            dec_key = open_token_key(
                str(
                    Pkcs11Uri(
                        token=base.token,
                        object="enc",
                        type="private",
                        module_path=base.module_path,
                        pin_value="1234",
                    )
                )
            )
        else:
            pair = ca.issue_company_pair(
                issuer, credit_code=code, company_name=name, key_type=key_type
            )  # type: ignore[arg-type]
            assert pair.signing.key is not None and pair.encryption.key is not None
            sign_key, dec_key = SoftwareKey(pair.signing.key), SoftwareKey(pair.encryption.key)
        creds = Credentials(
            sign_key, pair.signing.certificate, chain, dec_key, pair.encryption.certificate
        )
        return {
            "i": i,
            "name": name,
            "code": code,
            "ca": ca_name,
            "price": price,
            "token": on_token,
            "pair": pair,
            "creds": creds,
            "chain": chain,
        }

    def save_keys(self, folder: Path) -> Path:
        """The demo parties' signing keys and certificates as PEM files, for ``bidbridge link``
        (demo keys only, unencrypted). The token bidder's key stays on its token."""
        folder.mkdir(parents=True, exist_ok=True)
        parties: list[tuple[str, Credentials]] = list(self.staff.items())
        parties += [(f"bidder{b['i'] + 1}", b["creds"]) for b in self.bidders if not b["token"]]
        for name, creds in parties:
            key = creds.signing_key
            assert isinstance(key, SoftwareKey)
            pem = key.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            (folder / f"{name}.key.pem").write_bytes(pem)
            (folder / f"{name}.key.pem").chmod(0o600)
            (folder / f"{name}.pem").write_text(cert_pem(creds.signing_cert))
            if creds.chain:
                (folder / f"{name}.chain.pem").write_text("".join(cert_pem(c) for c in creds.chain))
        return folder

    def seal(self, b: dict[str, Any]) -> Path:
        folder = self.out / f"bidder{b['i'] + 1}"
        pkg = folder / "package"
        pkg.mkdir(parents=True)
        (pkg / "summary.json").write_text(
            json.dumps(
                {
                    "project_code": PROJECT,
                    "lot_code": "01",
                    "bidder_credit_code": b["code"],
                    "bidder_name": b["name"],
                    "price_fen": b["price"],
                    "duration_days": 300 + 15 * b["i"],
                    "quality": "合格",
                    "project_manager": f"项目经理{b['i'] + 1}",
                    "extra_fields": {"safety_rating": "A"},
                },
                ensure_ascii=False,
            )
        )
        (pkg / "商务标.pdf").write_bytes(f"%PDF-1.7 demo bid of {b['name']}\n".encode() * 4000)
        (pkg / "技术标").mkdir()
        (pkg / "技术标" / "施工组织设计.pdf").write_bytes(b"%PDF-1.7 technical\n" * 8000)
        enc_cert = b["pair"].encryption.certificate
        padding = KeyTransportPadding("oaep", "sha1", "sha1") if b["token"] else None
        recipient = Recipient(enc_cert, padding) if padding else Recipient(enc_cert)
        out = folder / "bid.p7m"
        seal_bid(
            pkg,
            out,
            signer=b["creds"].signing_key,
            signer_cert=b["creds"].signing_cert,
            chain=b["chain"],
            recipients=[recipient],
        )
        return out


def _money(fen: Any) -> str:
    return f"{fen / 100:,.2f} 元" if isinstance(fen, int) else "-"


PAGE_TITLES = {
    "bidder": "开标大厅（投标人）/ bidder hall",
    "host": "开标控制台（主持人）/ host console",
    "expert": "专家评标工作台 / expert desk",
    "supervisor": "监管大屏（监督）/ supervisor wall",
}


async def web_link(c: HallClient, session_id: str, page: str) -> str:
    """A one-time link to ``page`` of ``session_id`` for ``c``'s party (the path to open)."""
    out = await c.call("POST", "/api/auth/web-link", {"session_id": session_id, "page": page})
    return str(out["url"])


async def open_link(url: str, page: str, link: str) -> str:
    """Do what a browser does with a link: redeem its code, use the token, load the page."""
    code = link.split("#code=", 1)[1]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/api/auth/web-link/redeem", json={"code": code}) as r:
            got = await r.json()
            if r.status != 200 or got.get("page") != page:
                raise DemoFailed(f"the {page} link was refused: {got}")
        bearer = {"Authorization": f"Bearer {got['token']}"}
        async with http.post(f"{url}/api/auth/refresh", headers=bearer) as r:
            if r.status != 200:
                raise DemoFailed(f"the {page} page's token does not work: {await r.text()}")
        async with http.get(f"{url}/web/{page}.html") as r:
            if r.status != 200:
                raise DemoFailed(f"the {page} page is not served: HTTP {r.status}")
    return page


async def run(out: Path, port: int, factor: float, keep_running: bool) -> int:
    now = datetime.now(UTC)
    step("1. 两个 CA、五家投标人（其一使用 SoftHSM 令牌）/ two CAs, five bidders, one on a token")
    world = World(out, now)
    for b in world.bidders:
        where = "SoftHSM 令牌 / token" if b["token"] else "密钥文件 / key file"
        print(f"   {b['name']} ({b['code']}) CA {b['ca']}, {where}")

    step("2. 启动开标大厅服务（SQLite，本地文件，加速时钟）/ start the hall server")
    clock = DemoClock(factor)
    settings = Settings(data_dir=out / "data")
    hub = await build_hub(settings, trust=world.trust, identity=world.identity, clock=clock)
    clock.on_speed_change = hub.scheduler.wake
    await hub.store.add_account(
        "centre", "交易中心管理员", cert_pem(world.staff["centre"].signing_cert), clock.now()
    )
    app = build_app(hub)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port(port)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    print(f"   {url}  (OpenAPI: {url}/api/openapi.json, clock x{factor:g})")

    clients: list[EvalClient] = []

    def client(creds: Credentials) -> EvalClient:
        c = EvalClient(url, creds)
        clients.append(c)
        return c

    ok = True
    try:
        centre = client(world.staff["centre"])
        host = client(world.staff["host"])
        supervisor = client(world.staff["supervisor"])
        for role in ("host", "supervisor"):
            await centre.add_account(
                role,
                world.staff[role].signing_cert.subject.rfc4514_string()[:60],
                cert_pem(world.staff[role].signing_cert),
            )
        for b in world.bidders:
            pem = b["pair"]
            await centre.add_company(
                b["code"],
                b["name"],
                cert_pem(pem.signing.certificate),
                cert_pem(pem.encryption.certificate),
            )
        await centre.add_project(
            PROJECT, "市政道路改造工程", "某市城市建设投资有限公司", _code("91330100MA0TENDE0")
        )
        await centre.add_lot(PROJECT, "01", "01 标段")
        t = clock.now()
        created = await host.create_session(
            lot_id=f"{PROJECT}/01",
            title="市政道路改造工程 01 标段",
            sign_in_opens=t.isoformat(),
            deadline=(t + timedelta(minutes=15)).isoformat(),
            decrypt_minutes=8,
            confirm_minutes=5,
            min_bids=3,
            table_fields=["safety_rating"],
        )
        sid = created["session_id"]
        await host.publish(sid)
        print(
            f"   session {sid}: deadline {(t + timedelta(minutes=15)):%H:%M:%S} UTC (server clock)"
        )

        step("3. 离线封装、上传、回执、解密演练 / seal offline, upload, receipt, rehearsal")
        with clock.acting():  # the parties act in real time; the deadline is not raced
            bidder_clients = []
            for b in world.bidders:
                envelope = await asyncio.to_thread(world.seal, b)
                c = client(b["creds"])
                bidder_clients.append(c)
                r = await c.upload(sid, envelope)
                receipt = r["receipt"]
                print(
                    f"   {b['name']}: {receipt['size']} bytes, SHA-256 {receipt['envelope_sha256'][:16]}…, 回执 receipt {receipt['receipt_id']} at {receipt['received_at']}"
                )
            # The third bidder replaced its CA key after sealing: the rehearsal shows it days early.
            failing = world.bidders[FAILS]
            renewed = ca.issue_company_pair(
                world.root_a, credit_code=failing["code"], company_name=failing["name"]
            )
            assert renewed.encryption.key is not None
            failing["creds"].decrypt_key = SoftwareKey(renewed.encryption.key)
            failing["creds"].decrypt_cert = renewed.encryption.certificate
            for b, c in zip(world.bidders, bidder_clients, strict=True):
                result = await c.rehearse(sid)
                mark = (
                    "通过 passed"
                    if result["passed"]
                    else f"失败 FAILED {result['code']}: {result['message'][:90]}"
                )
                print(f"   演练 rehearsal {b['name']}: {mark}")
        view = await host.session(sid)
        print(
            f"   主持人此时看到的投标数 / bids the host can see before the deadline: {('bids' in view['view'] and len(view['view']['bids'])) or '— (不可见 hidden, rule 4)'}"
        )

        step(
            "4. 截标、监管签到、开标、在线解密 / deadline, supervisor signs in, opening, online decryption"
        )
        async with HallFollower(supervisor, sid) as sup_follow:
            await sup_follow.wait_for(lambda e: e["type"] == "session_sealed", timeout=120)
            print("   截标 sealed; 监管人员在线 / supervisor present")
            await host.start(sid)
            await host.open_decryption(sid)
            print("   解密窗口开启 / decryption window open")
            with clock.acting():
                for b, c in zip(world.bidders, bidder_clients, strict=True):
                    try:
                        result = await c.decrypt(sid)
                        state = (
                            "解密成功 decrypted"
                            if result["ok"]
                            else f"失败 failed {result['code']}"
                        )
                    except BidBridgeError as exc:
                        state = f"本地无法解开 cannot unwrap locally: {exc.code}"
                    print(f"   {b['name']}: {state}")
            table_event = await sup_follow.wait_for(
                lambda e: e["type"] == "table_published", timeout=120
            )
            for e in sup_follow.ordered():
                if e["type"] in ("bid_revoked", "bid_withdrawn"):
                    print(
                        f"   窗口关闭 window closed: {e['payload']['bidder']} -> {e['type']} ({e['payload']['evidence']['finding']})"
                    )

            step("5. 唱标 / opening table")
            for row in table_event["payload"]["table"]["rows"]:
                print(
                    f"   {row['bidder_name']:<12} {row['status']:<10} {_money(row['price_fen']):>20}  工期 {row['duration_days'] or '-'} 天  安全 {row['fields'].get('safety_rating') or '-'}"
                )

            step("6. 异议与答复、确认 / objection and reply, confirmation")
            with clock.acting():
                failing_client = bidder_clients[FAILS]
                await failing_client.object(
                    sid,
                    "我单位 CA 锁更换后无法解密，请求核实。/ Our CA key was replaced and we could not decrypt; please check.",
                )
                await host.reply(
                    sid,
                    1,
                    "经核实，贵单位演练时已提示失败，解密失败责任在投标人，按规定撤销。/ Your rehearsal had already failed; the failure is the bidder's, the bid is revoked.",
                )
                print("   异议 #1 已答复 / objection #1 answered")
                await host.open_confirmation(sid)
                for c in bidder_clients[:2]:
                    await c.confirm(sid)
            print(
                "   两家签名确认，其余沉默视为确认 / two bidders signed; silence counts as confirmation"
            )
            await sup_follow.wait_for(
                lambda e: e["type"] == "record_generated",
                timeout=120,
            )

            step("7. 开标记录（平台、主持人、监管签名）/ the opening record, signed")
            await host.sign_record(sid)
            await supervisor.sign_record(sid)
            await sup_follow.wait_for(
                lambda e: e["type"] == "record_published",
                timeout=60,
            )
            record = await host.record(sid)
            print(record["text"])
            print(f"   签名 signatures: {', '.join(sorted(record['signatures']))}")

        step("8. 导出并离线验证档案 / export and verify the archive")
        archive = out / "archive.zip"
        await export_session(
            hub.store,
            hub.blobs,
            hub.trust,
            hub.identity,
            sid,
            archive,
            clock.now(),
            server_id=hub.settings.server_id,
        )
        report = await asyncio.to_thread(verify_archive, archive)
        print(
            f"   {archive}: {report.events} events, {report.signatures_checked} signatures, {report.bids_decrypted} decrypted bids, head {report.head_hash[:16]}… — 验证通过 / verified"
        )
        revoked = [r for r in table_event["payload"]["table"]["rows"] if r["status"] == "revoked"]
        if len(revoked) != 1 or revoked[0]["bidder"] != failing["code"]:
            raise DemoFailed("expected exactly the third bidder revoked")

        async def export_evaluation(session_id: str, path: Path) -> None:
            from server.audit.verify_draw import check_draw

            await export_session(
                hub.store,
                hub.blobs,
                hub.trust,
                hub.identity,
                session_id,
                path,
                clock.now(),
                server_id=hub.settings.server_id,
            )
            checked = await asyncio.to_thread(verify_archive, path)
            print(
                f"   {path}: {checked.events} events, {checked.signatures_checked} signatures — "
                "验证通过 / verified"
            )
            draw = await asyncio.to_thread(check_draw, path)
            if not draw.matches:
                raise DemoFailed("the draw does not recompute: " + "; ".join(draw.differences))
            print(
                f"   抽取复核 draw recomputed from the archive: {draw.summary()} — 一致 / matches"
            )

        eval_sid, expert = await run_evaluation(
            out=out,
            url=url,
            hub=hub,
            world=world,
            opening_sid=sid,
            client=client,
            export=export_evaluation,
        )
        clients.append(expert)

        step("16. 浏览器页面（一次性链接）/ the pages in a browser, with one-time links")
        clock.settle()
        keys = world.save_keys(out / "keys")
        links = {
            "bidder": await web_link(bidder_clients[0], sid, "bidder"),
            "host": await web_link(host, sid, "host"),
            "expert": await web_link(expert, eval_sid, "expert"),
            "supervisor": await web_link(supervisor, sid, "supervisor"),
        }
        for page, link in links.items():
            print(f"   {PAGE_TITLES[page]}:\n      {url}{link}")
        print(
            "   链接只能使用一次、一分钟内有效（时钟已恢复为实际时间）/ each link works once, for "
            "one minute (the clock now runs at real time). 新链接 / a fresh link:"
        )
        for page, who, session in (
            ("bidder", "bidder1", sid),
            ("host", "host", sid),
            ("supervisor", "supervisor", sid),
        ):
            print(
                f"      bidbridge link --server {url} --demo {out} --as {who} --page {page} "
                f"--session {session}"
            )
        print(
            "      (专家工作台由评标室代理打开 / the expert desk is opened by the room agent: "
            f"bidbridge room desk ...; evaluation {eval_sid})"
        )
        print(f"   演示各方的密钥 / the demo parties' keys: {keys}")
        if not keep_running:
            checked = [await open_link(url, page, link) for page, link in links.items()]
            print(
                f"   页面链接已验证 / page links checked: {len(checked)} ({', '.join(checked)}) "
                "— 已在此使用 / used up here"
            )
    except BidBridgeError as exc:
        print(f"ERROR {exc.line()}", file=sys.stderr)
        ok = False
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
    if ok and keep_running:
        print(
            f"\n服务器运行中 / the server keeps running at {url} — Ctrl-C 停止 / to stop",
            flush=True,
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
    await runner.cleanup()
    if ok and not keep_running:
        print(
            "\n服务器已停止（--exit）。要在浏览器中打开上面的页面，请不带 --exit 运行 "
            "`bidbridge demo`（即 `make demo`），服务器会保持运行。/ The server has stopped "
            "(--exit). To open the pages above in a browser, run `bidbridge demo` without --exit "
            "(that is `make demo`): the server then keeps running."
        )
    print("\n演示完成 / demo complete" if ok else "\n演示失败 / demo FAILED")
    return 0 if ok else 1


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    try:
        return asyncio.run(run(out, args.port, args.factor, not args.exit))
    except KeyboardInterrupt:
        print("\n已停止 / stopped")
        return 0


def cmd_link(args: argparse.Namespace) -> int:
    if args.demo:
        keys = Path(args.demo) / "keys"
        chain = keys / f"{args.as_}.chain.pem"
        creds = Credentials.load(
            key=keys / f"{args.as_}.key.pem",
            cert=keys / f"{args.as_}.pem",
            chain=[chain] if chain.exists() else [],
        )
    else:
        if not (args.cert and (args.key or args.token_uri)):
            raise DemoFailed("--demo DIR --as NAME, or --cert with --key or --token-uri")
        creds = Credentials.load(
            key=args.key, cert=args.cert, token_uri=args.token_uri, chain=args.chain or ()
        )

    async def ask() -> str:
        async with HallClient(args.server, creds) as c:
            await c.login()
            return await web_link(c, args.session, args.page)

    link = asyncio.run(ask())
    print(f"{args.server.rstrip('/')}{link}")
    print(
        "一次性链接：只能使用一次，一分钟内有效 / one-time link: works once, for one minute",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    link = sub.add_parser(
        "link",
        help="网页一次性链接 / a one-time link that opens a page in a browser (CA login first)",
        description=(
            "用 CA 密钥登录服务器，获取打开网页的一次性链接（只能使用一次，一分钟内有效）。"
            "专家工作台的链接由评标室代理（bidbridge room desk）获取。/ Log in to the server with "
            "a CA key and ask for a one-time link to a page (works once, for one minute). The "
            "expert desk's link comes from the room agent (bidbridge room desk)."
        ),
    )
    link.add_argument("--server", default="http://127.0.0.1:8080", help="the server's address")
    link.add_argument("--session", required=True, help="session id (an opening or evaluation)")
    link.add_argument(
        "--page", required=True, choices=["bidder", "host", "supervisor"], help="which page"
    )
    link.add_argument("--demo", help="a demo's folder (bidbridge demo --out): use its keys")
    link.add_argument(
        "--as",
        dest="as_",
        default="host",
        help="with --demo: host, supervisor, centre or bidder1 ... bidder4 (default host)",
    )
    link.add_argument("--key", help="signing key file (PEM, DER or PKCS#12)")
    link.add_argument("--cert", help="signing certificate (PEM)")
    link.add_argument("--chain", action="append", help="intermediate certificate (repeatable)")
    link.add_argument("--token-uri", help="PKCS#11 URI of the signing key instead of --key")
    link.set_defaults(handler=cmd_link)

    p = sub.add_parser(
        "demo",
        help="运行开标演示 run a complete no-show opening on the embedded default",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="demo-out", help="folder for the demo's files (recreated)")
    p.add_argument(
        "--port", type=int, default=8080, help="port of the hall server (next free if taken)"
    )
    p.add_argument("--factor", type=float, default=60.0, help="clock acceleration (default x60)")
    p.add_argument(
        "--exit", action="store_true", help="exit after the demo (status 0 only on success)"
    )
    p.set_defaults(handler=cmd_demo)
