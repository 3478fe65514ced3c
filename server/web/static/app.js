// BidBridge pages: what every page shares (plain ES module, no build step).
//
// - i18n: one dictionary (Chinese first, English second), a language switch kept in localStorage;
// - the REST helper: bearer token from sessionStorage, errors shown as {code, zh, en}; the token is
//   renewed before it runs out (POST /api/auth/refresh), so a page left open keeps working;
// - event positions (docs/positions.md): a viewer never sees the log's global numbering; each
//   event comes with its `id` (the chain hash) and `pos`, its numbers in the viewer's own streams;
// - the hall follower: socket.io namespace "/hall", a cursor (stream -> n) sent on every
//   (re)connection, duplicates dropped by id and by the cursor, a gap asks for a replay after the
//   cursor, live events held back during a replay; the clock offset measured against the server's
//   "time";
// - the fold: the session as this role may see it = GET /api/sessions/{id} (a view read at the
//   viewer's heads `pos`) plus every event after that view, folded here exactly as the server
//   folds them (server/domain/opening.py `evolve`, filtered like server/domain/views.py `view_for`).
//   A page reloaded mid-session folds the same events and shows the same state.

import { io } from "/web/vendor/socket.io.esm.min.js";

// --- i18n ----------------------------------------------------------------------------------------

const LANG_KEY = "bidbridge.lang";
const AUTH_KEY = "bidbridge.auth.";
const SYNC_KEY = "bidbridge.clockSyncMs";

/** key -> [Chinese, English]; `{name}` placeholders are filled by t(). */
const TEXT = {
  "app.name": ["BidBridge 不见面开标", "BidBridge remote bid opening"],
  "app.skip": ["跳到主要内容", "Skip to the main content"],
  "lang.switch": ["English", "中文"],
  "lang.switch.label": ["切换到英文 / Switch to English", "切换到中文 / Switch to Chinese"],
  "common.none": ["无", "none"],
  "common.dash": ["—", "—"],
  "common.loading": ["正在加载…", "Loading…"],
  "common.beijing": ["北京时间", "Beijing time"],
  "common.server_time": ["服务器时间", "Server time"],
  "common.you": ["您", "You"],
  "common.copy": ["复制命令", "Copy the command"],
  "common.copied": ["已复制", "Copied"],
  "common.latest": ["最新公开事件", "Latest public event"],
  "common.close": ["关闭", "Close"],

  // index and enter
  "index.title": ["开标大厅网页", "Opening hall pages"],
  "index.lead": [
    "本页面不需要在浏览器中安装 CA 插件。请在本机的代理（投标人代理、评标室代理）或 bidbridge link 命令中用 CA 锁登录，它会打印一个一次性链接；在浏览器中打开该链接即进入对应页面。",
    "These pages need no CA plug-in in the browser. Log in with your CA key in the agent on your computer (the bidder agent, the room agent) or with the bidbridge link command; it prints a one-time link. Open that link in the browser to enter the page.",
  ],
  "index.once": [
    "链接只能使用一次，且在一分钟内有效。链接过期或已使用时，请在代理中重新生成。",
    "A link works once and for one minute. When it has expired or been used, ask the agent for a new one.",
  ],
  "index.pages": ["四个页面", "The four pages"],
  "index.page.bidder": ["开标大厅（投标人）：签到、解密状态、开标记录表、异议。", "Bidder hall: sign-in, decryption status, the opening table, objections."],
  "index.page.host": ["开标控制台（主持人）：开标、解密、确认的操作，异议答复，开标记录。", "Host console: opening, decryption and confirmation, replies to objections, the record."],
  "index.page.expert": ["专家评标工作台（评标专家，在评标室打开）。", "Expert desk (evaluation experts, opened at the evaluation room)."],
  "index.page.supervisor": [
    "监管大屏（监督）：所有开标和评标会话的状态与实时事件、评标室画面、预警、预警信号、档案下载。",
    "Supervisor wall: every opening and evaluation with its state and live events, the rooms' video, warnings, signals, the archive download.",
  ],
  "index.how": ["如何获取链接", "How to get a link"],
  "index.step1": ["在代理中用 CA 锁登录服务器。", "Log in to the server with your CA key in the agent."],
  "index.step2": [
    "让代理为会话生成网页链接：bidbridge link --page bidder|host|supervisor --session 会话编号（接口：POST /api/auth/web-link）；专家工作台由评标室代理生成（bidbridge room desk）。",
    "Have the agent create a page link for the session: bidbridge link --page bidder|host|supervisor --session ID (API: POST /api/auth/web-link); the expert desk's link comes from the room agent (bidbridge room desk).",
  ],
  "index.step3": [
    "在浏览器中打开代理打印的链接（…/web/enter.html#code=…）。",
    "Open the printed link (…/web/enter.html#code=…) in the browser.",
  ],
  "index.note": [
    "签名类操作（确认开标记录表、签名开标记录）仍须在代理中使用 CA 锁完成；网页会显示对应命令。",
    "Signing (confirming the table, signing the record) still happens in the agent with the CA key; the pages show the command to run.",
  ],
  "enter.title": ["正在进入页面", "Entering the page"],
  "enter.working": ["正在验证一次性链接…", "Checking the one-time link…"],
  "enter.failed": ["无法进入页面", "Cannot enter the page"],
  "enter.back": ["返回说明页", "Back to the instructions"],
  "err.no_auth": [
    "本标签页没有登录信息：请在代理中生成新的一次性链接并在本标签页打开。",
    "This tab holds no sign-in: ask the agent for a new one-time link and open it in this tab.",
  ],
  "err.wrong_page": ["此登录不能打开本页面。", "This sign-in may not open this page."],
  "hint.link": [
    "请在代理程序中重新生成一次性链接（链接只能使用一次，一分钟内有效）。",
    "Ask the agent for a new one-time link (a link works once, for one minute).",
  ],
  "hint.token": [
    "登录已过期：请在代理程序中重新生成一次性链接。",
    "Your sign-in has expired: ask the agent for a new one-time link.",
  ],
  "hint.network": ["请检查网络后重试。", "Check the network and try again."],

  // connection
  "conn.connecting": ["正在连接…", "Connecting…"],
  "conn.live": ["实时连接", "Live"],
  "conn.replaying": ["正在同步事件…", "Catching up…"],
  "conn.reconnecting": [
    "连接中断，正在重连（已收到的事件不再重发，从第 {n} 号公开事件之后续传）",
    "Connection lost, reconnecting (events already here are not sent again; resuming after public event #{n})",
  ],
  "conn.refused": ["连接被拒绝", "Connection refused"],
  "conn.offset": ["本机时钟与服务器相差 {s} 秒（倒计时以服务器时间为准）", "Your clock differs from the server's by {s} s (countdowns follow the server)"],

  // session and stages
  "session.project": ["项目", "Project"],
  "session.lot": ["标段", "Lot"],
  "session.tenderer": ["招标人", "Tenderer"],
  "session.id": ["开标会编号", "Session"],
  "session.deadline": ["投标截止时间", "Bid deadline"],
  "session.sign_in_opens": ["签到开始时间", "Sign-in opens"],
  "session.decrypt_closes": ["解密结束时间", "Decryption closes"],
  "session.confirm_closes": ["确认结束时间", "Confirmation closes"],
  "session.status": ["当前状态", "Status"],
  "session.stages": ["开标流程", "Stages of the opening"],
  "session.bids_opened": ["开标的投标文件数", "Bids opened"],
  "stage.sign_in": ["签到", "Sign-in"],
  "stage.sealed": ["截止封存", "Deadline"],
  "stage.opening": ["开标", "Opening"],
  "stage.decrypting": ["解密", "Decryption"],
  "stage.announcing": ["唱标", "Table"],
  "stage.confirming": ["确认", "Confirmation"],
  "stage.closed": ["结束", "Closed"],
  "status.draft": ["草稿", "draft"],
  "status.published": ["已发布，等待签到", "published, sign-in not open yet"],
  "status.sign_in": ["签到中（投标截止前）", "sign-in open (before the deadline)"],
  "status.sealed": ["已截止封存，等待开标", "sealed, waiting for the opening"],
  "status.opening": ["开标中，等待开启解密", "opening, decryption not open yet"],
  "status.decrypting": ["解密中", "decrypting"],
  "status.announcing": ["唱标：开标记录表已公布", "table published"],
  "status.confirming": ["确认中", "confirming the table"],
  "status.closed": ["开标已结束", "closed"],
  "status.failed": ["流标（有效投标不足）", "failed (too few bids)"],
  "status.suspended": ["已暂停", "suspended"],
  "suspended.banner": ["开标已暂停：{reason}", "The opening is suspended: {reason}"],
  "suspended.note": ["暂停期间倒计时停止，恢复后截止时间顺延。", "Countdowns stop while suspended; deadlines move by the pause."],
  "failed.banner": [
    "流标：有效投标文件少于 {n} 家，依法不予开标。",
    "Failed: fewer than {n} valid bids, the lot may not be opened.",
  ],
  "extended.note": ["{window}已延长 {minutes} 分钟：{reason}", "{window} extended by {minutes} min: {reason}"],
  "window.deadline": ["投标截止时间", "The bid deadline"],
  "window.decryption": ["解密时间", "The decryption window"],
  "window.confirmation": ["确认时间", "The confirmation window"],

  // countdown
  "cd.title": ["倒计时", "Countdown"],
  "cd.to_sign_in": ["距签到开始", "Until sign-in opens"],
  "cd.to_deadline": ["距投标截止", "Until the bid deadline"],
  "cd.to_decrypt_close": ["距解密结束", "Until decryption closes"],
  "cd.to_confirm_close": ["距确认结束", "Until confirmation closes"],
  "cd.paused": ["已暂停（剩余时间冻结）", "Paused (time left frozen)"],
  "cd.none": ["当前阶段无倒计时", "No countdown in this stage"],
  "cd.due": ["时间已到，等待服务器处理", "Time is up; the server is moving on"],
  "cd.days": ["{d} 天 ", "{d} d "],

  // bid statuses
  "bid.uploaded": ["已上传", "uploaded"],
  "bid.retracted": ["截止前已撤回", "withdrawn before the deadline"],
  "bid.decrypted": ["已解密", "decrypted"],
  "bid.failed": ["解密失败", "decryption failed"],
  "bid.revoked": ["撤销（投标人原因未解密）", "revoked (not decrypted, bidder's cause)"],
  "bid.withdrawn": ["撤回（非投标人原因）", "withdrawn (not the bidder's fault)"],
  "conf.signed": ["已签名确认", "confirmed (signed)"],
  "conf.deemed": ["视为确认", "deemed confirmed"],
  "conf.pending": ["未确认", "not confirmed"],

  // bidder page
  "bidder.title": ["开标大厅（投标人）", "Opening hall (bidder)"],
  "bidder.me": ["投标人", "Bidder"],
  "bidder.receipt": ["我的投标文件与回执", "My bid and receipt"],
  "bidder.no_bid": ["您尚未上传投标文件。", "You have not uploaded a bid."],
  "bidder.no_bid_after": ["您在本标段没有有效投标文件。", "You have no valid bid in this lot."],
  "bidder.upload_cmd": ["截止前在代理中上传：", "Upload before the deadline with the agent:"],
  "receipt.id": ["回执编号", "Receipt"],
  "receipt.received_at": ["接收时间", "Received at"],
  "receipt.sha256": ["密文 SHA-256", "Ciphertext SHA-256"],
  "receipt.size": ["大小", "Size"],
  "receipt.status": ["状态", "Status"],
  "receipt.verify": [
    "回执由平台签名；可在代理中验证：",
    "The receipt is signed by the platform; verify it in the agent:",
  ],
  "signin.title": ["签到", "Sign-in"],
  "signin.done": ["已签到", "Signed in"],
  "signin.not": ["尚未签到", "Not signed in"],
  "signin.button": ["签到", "Sign in"],
  "signin.closed": ["当前阶段不能签到", "Sign-in is not open in this stage"],
  "rehearsal.title": ["解密演练", "Decryption rehearsal"],
  "rehearsal.passed": ["演练通过：本机 CA 锁可以解开已上传的投标文件。", "Passed: your CA key opens the uploaded bid."],
  "rehearsal.failed": ["演练失败", "Rehearsal failed"],
  "rehearsal.none": ["尚未演练。", "Not rehearsed yet."],
  "rehearsal.next_none": ["建议截止前在代理中演练：", "Rehearse before the deadline in the agent:"],
  "rehearsal.next_failed": [
    "下一步：检查 CA 锁和加密证书；如仍失败，请在截止前重新加密并上传投标文件，然后再次演练：",
    "Next: check your CA key and encryption certificate; if it still fails, re-seal and upload the bid before the deadline, then rehearse again:",
  ],
  "decrypt.title": ["我的解密状态", "My decryption"],
  "decrypt.wait_deadline": ["投标截止后由主持人开标，届时在此显示解密状态。", "After the deadline the host opens the session; your decryption status shows here."],
  "decrypt.wait_open": ["等待主持人开启解密。", "Waiting for the host to open decryption."],
  "decrypt.open": ["解密已开启：请在代理中用 CA 锁解密（内容密钥在本机解开）：", "Decryption is open: decrypt with your CA key in the agent (the key is unwrapped on your computer):"],
  "decrypt.until": ["请在 {at} 前完成。", "Finish before {at}."],
  "decrypt.ok": ["解密成功：服务器已验证投标文件和签名。", "Decrypted: the server verified the bid and its signature."],
  "decrypt.failed": ["最近一次解密失败", "The last attempt failed"],
  "decrypt.cause.bidder": ["原因归属：投标人", "Attributed to: the bidder"],
  "decrypt.cause.platform": ["原因归属：平台", "Attributed to: the platform"],
  "decrypt.next_bidder": [
    "下一步：确认使用投标时的 CA 锁（加密证书），在解密结束前重新执行：",
    "Next: use the CA key (encryption certificate) the bid was sealed with and run again before decryption closes:",
  ],
  "decrypt.next_platform": [
    "下一步：平台故障已记录，不归责于您；请联系主持人，并可在解密结束前重试：",
    "Next: the platform fault is recorded and not held against you; contact the host, and you may retry before decryption closes:",
  ],
  "decrypt.revoked": [
    "解密时间结束时投标文件未能解密，按规定撤销（原因：{finding}）。如有异议，请在下方提出。",
    "The bid was not decrypted when the window closed and is revoked (finding: {finding}). Raise an objection below if you disagree.",
  ],
  "decrypt.withdrawn": [
    "因非投标人原因未能解密，按撤回处理（已记录平台故障证据）。",
    "Not decrypted for reasons outside your control: treated as withdrawn (the platform fault is on record).",
  ],
  "decrypt.retracted": ["您已在截止前撤回投标文件。", "You withdrew your bid before the deadline."],
  "decrypt.incident": ["平台故障记录：{reason}", "Platform incident recorded: {reason}"],
  "finding.no_key_sent": ["未发送密钥", "no key was sent"],
  "finding.bidder_key_failed": ["投标人密钥未能解开", "the bidder's key did not open the bid"],
  "finding.platform_fault": ["平台故障", "platform fault"],
  "decrypt.summary": ["我的投标摘要（解密后）", "My bid summary (decrypted)"],
  "bidder.others_hidden": [
    "唱标前不显示其他投标人的任何信息。",
    "Nothing about other bidders is shown before the table is published.",
  ],
  "confirm.title": ["确认开标记录表", "Confirm the opening table"],
  "confirm.button": ["签名确认（需 CA 锁）", "Confirm with a signature (needs your CA key)"],
  "confirm.explain": [
    "确认须使用本单位 CA 锁签名，浏览器无法代为签名。请在投标人代理中执行以下命令（使用平时的 --key 或 --token-uri 选项）；代理会对下面这份开标记录表签名：",
    "Confirming needs your company's CA signature, which the browser cannot make. Run this in the bidder agent (with your usual --key or --token-uri options); it signs the table shown here:",
  ],
  "confirm.sha": ["开标记录表 SHA-256", "Table SHA-256"],
  "confirm.silence": ["确认时间结束前未确认的，视为确认。", "Silence until the window closes counts as confirmation."],
  "confirm.not_yet": ["主持人开启确认后可确认开标记录表。", "You can confirm once the host opens confirmation."],
  "confirm.na": ["您的投标未解密，无需确认。", "Your bid was not decrypted; nothing to confirm."],
  "confirm.closed": ["确认已结束。", "Confirmation has closed."],

  // table
  "table.title": ["开标记录表（唱标）", "Opening table"],
  "table.none": ["开标记录表尚未公布。", "The opening table has not been published yet."],
  "table.caption": ["开标记录表，共 {n} 家", "Opening table, {n} bids"],
  "table.no": ["序号", "No."],
  "table.bidder": ["投标人", "Bidder"],
  "table.code": ["统一社会信用代码", "Credit code"],
  "table.status": ["状态", "Status"],
  "table.price": ["投标报价（元）", "Price (CNY)"],
  "table.duration": ["工期（天）", "Duration (days)"],
  "table.quality": ["质量", "Quality"],
  "table.pm": ["项目经理", "Project manager"],
  "table.security": ["保证金/保函", "Security"],
  "table.confirmation": ["确认", "Confirmation"],
  "table.sec.valid": ["有效", "valid"],
  "table.sec.invalid": ["无效", "invalid"],
  "table.sec.none": ["未登记", "none recorded"],

  // objections
  "obj.title": ["异议", "Objections"],
  "obj.none": ["暂无异议。", "No objections."],
  "obj.label": ["异议内容", "Your objection"],
  "obj.send": ["提交异议", "Raise the objection"],
  "obj.sent": ["异议已提交。", "Objection raised."],
  "obj.closed": ["当前阶段不能提出异议（开标开始后至开标记录生成前可提出）。", "Objections are not open now (they are from the opening until the record is made)."],
  "obj.empty": ["请填写异议内容。", "Write the objection first."],
  "obj.awaiting": ["等待主持人答复", "Awaiting the host's reply"],
  "obj.reply": ["主持人答复", "Host's reply"],
  "obj.from": ["#{id} {who}", "#{id} {who}"],
  "obj.private": ["仅您与主持人、监督可见", "Seen by you and the staff only"],
  "obj.public": ["公开", "Public"],
  "obj.reply_label": ["答复异议 #{id}", "Reply to objection #{id}"],
  "obj.reply_send": ["发送答复", "Send the reply"],
  "obj.also_label": ["同时答复内容相同的异议（编号，用逗号分隔，可不填）", "Also answer objections that say the same (numbers, comma-separated, optional)"],
  "obj.unanswered": ["{n} 条待答复", "{n} awaiting a reply"],

  // log
  "log.title": ["大厅动态（按发生顺序，#号为公开事件编号）", "Hall log (in order; # numbers the public events)"],
  "log.empty": ["暂无事件。", "No events yet."],

  // host page
  "host.title": ["开标控制台（主持人）", "Opening console (host)"],
  "host.me": ["主持人", "Host"],
  "host.controls": ["开标操作", "Controls"],
  "host.start": ["开始开标", "Start the opening"],
  "host.decryption": ["开启解密", "Open decryption"],
  "host.confirmation": ["开启确认", "Open confirmation"],
  "host.extend": ["延长当前时间", "Extend the current window"],
  "host.suspend": ["暂停", "Suspend"],
  "host.resume": ["恢复", "Resume"],
  "host.minutes": ["延长分钟数", "Minutes to extend"],
  "host.reason": ["原因（记入开标记录，通知监督）", "Reason (recorded, the supervisor is notified)"],
  "host.reason_needed": ["请填写原因。", "A reason is required."],
  "host.done": ["已完成：{what}", "Done: {what}"],
  "host.why.start_deadline": ["投标截止后才能开标。", "The opening can start only after the deadline."],
  "host.why.start_supervisor": ["须有监督人员在线才能开标。", "A supervisor must be present to start."],
  "host.why.state": ["当前阶段不可用。", "Not available in this stage."],
  "host.why.objections": ["有异议未答复，答复后才能开启确认。", "Answer every objection before opening confirmation."],
  "host.why.no_window": ["当前阶段没有可延长的时间。", "No window to extend in this stage."],
  "host.presence": ["在线情况", "Who is here"],
  "host.staff_present": ["主持人在线：{n}", "Hosts present: {n}"],
  "host.supervisors": ["监督在线：{n}", "Supervisors present: {n}"],
  "host.no_supervisor": ["无监督在线：不能开始开标。", "No supervisor present: the opening cannot start."],
  "host.bidders_hidden": [
    "投标截止前，任何人（含主持人和监督）都不能得知投标人数量和名称。",
    "Before the deadline nobody, host and supervisor included, may learn how many bidders there are or who they are.",
  ],
  "host.signed_in_count": ["已签到投标人：{n}", "Bidders signed in: {n}"],
  "host.bid_count": ["有效投标文件：{n}", "Valid bids: {n}"],
  "host.bids": ["投标与解密状态", "Bids and decryption"],
  "host.bids.attempts": ["解密尝试次数", "Attempts"],
  "host.bids.none": ["截止后显示。", "Shown after the deadline."],
  "host.record": ["开标记录", "Opening record"],
  "host.record.none": ["开标记录在确认结束且异议均已答复后生成。", "The record is made when confirmation has closed and every objection is answered."],
  "host.record.sha": ["开标记录 SHA-256", "Record SHA-256"],
  "host.record.signed": ["已签名：{roles}", "Signed by: {roles}"],
  "host.record.sign": ["主持人签名须使用 CA 锁，请在代理中执行：", "The host signs with the CA key; run in the agent:"],
  "host.incidents": ["平台故障记录", "Platform incidents"],
  "role.server": ["平台", "platform"],
  "role.host": ["主持人", "host"],
  "role.supervisor": ["监督", "supervisor"],
  "role.centre": ["交易中心", "centre"],
  "role.bidder": ["投标人", "bidder"],

  // events
  "ev.session_created": ["创建开标会", "Session created"],
  "ev.session_published": ["发布开标会", "Session published"],
  "ev.sign_in_opened": ["签到开始", "Sign-in opened"],
  "ev.bidder_signed_in": ["投标人签到", "Bidder signed in"],
  "ev.bid_uploaded": ["上传投标文件，平台出具回执", "Bid uploaded, receipt issued"],
  "ev.bid_retracted": ["撤回投标文件", "Bid withdrawn"],
  "ev.rehearsal_reported": ["解密演练结果", "Rehearsal result"],
  "ev.session_sealed": ["投标截止，封存", "Deadline passed, sealed"],
  "ev.session_failed": ["流标", "Failed (too few bids)"],
  "ev.bids_counted": ["统计投标数量", "Bids counted"],
  "ev.party_joined": ["进入大厅", "Joined the hall"],
  "ev.party_left": ["离开大厅", "Left the hall"],
  "ev.opening_started": ["开标开始", "Opening started"],
  "ev.decryption_opened": ["解密开始", "Decryption opened"],
  "ev.bid_decrypted": ["解密成功", "Bid decrypted"],
  "ev.decryption_failed": ["解密失败", "Decryption failed"],
  "ev.incident_recorded": ["记录平台故障", "Platform incident recorded"],
  "ev.security_recorded": ["登记保证金/保函", "Security recorded"],
  "ev.backup_requested": ["申请备用解密", "Backup decryption requested"],
  "ev.backup_approved": ["批准备用解密", "Backup decryption approved"],
  "ev.backup_quorum_reached": ["备用解密达到法定人数", "Backup quorum reached"],
  "ev.decryption_closed": ["解密结束", "Decryption closed"],
  "ev.bid_revoked": ["投标撤销", "Bid revoked"],
  "ev.bid_withdrawn": ["投标按撤回处理", "Bid withdrawn (platform fault)"],
  "ev.table_published": ["唱标：公布开标记录表", "Opening table published"],
  "ev.objection_raised": ["提出异议", "Objection raised"],
  "ev.objection_answered": ["答复异议", "Objection answered"],
  "ev.confirmation_opened": ["开始确认", "Confirmation opened"],
  "ev.table_confirmed": ["签名确认开标记录表", "Table confirmed"],
  "ev.confirmation_closed": ["确认结束", "Confirmation closed"],
  "ev.record_generated": ["生成开标记录", "Record generated"],
  "ev.record_signed": ["签名开标记录", "Record signed"],
  "ev.record_published": ["公布开标记录", "Record published"],
  "ev.session_suspended": ["暂停", "Suspended"],
  "ev.session_resumed": ["恢复", "Resumed"],
  "ev.window_extended": ["延长时间", "Window extended"],
  "ev.platform_outage": ["平台中断，时间已顺延", "Platform outage: window extended"],

  // evaluation events (远程异地评标)
  "ev.evaluation_created": ["创建评标会", "Evaluation created"],
  "ev.draw_committed": ["平台提交随机数承诺", "Server committed to its random value"],
  "ev.draw_entropy": ["加入随机数", "Entropy added"],
  "ev.draw_completed": ["抽取完成，平台公开随机数", "Draw completed, server value revealed"],
  "ev.committee_drawn": ["评标委员会抽取完成", "Committee drawn"],
  "ev.room_assigned": ["分配评标室", "Room assigned"],
  "ev.member_drawn": ["抽中专家", "Expert drawn"],
  "ev.member_declined": ["专家回避/谢绝", "Expert declined"],
  "ev.member_absent": ["专家缺席", "Expert absent"],
  "ev.member_no_key": ["专家无 CA 锁", "Expert without a CA key"],
  "ev.member_replaced": ["补抽专家", "Expert replaced"],
  "ev.replacement_failed": ["补抽失败", "Replacement failed"],
  "ev.member_signed_in": ["专家签到", "Expert signed in"],
  "ev.room_link": ["评标室音视频连接", "Room link"],
  "ev.evaluation_started": ["评标开始", "Evaluation started"],
  "ev.chair_vote": ["推选组长投票", "Vote for the chair"],
  "ev.chair_elected": ["组长产生", "Chair elected"],
  "ev.stage_opened": ["评审阶段开始", "Review stage opened"],
  "ev.sheet_submitted": ["提交签名评审表", "Signed sheet submitted"],
  "ev.sheet_content": ["评审表内容", "Sheet content"],
  "ev.rescore_called": ["要求复核评分", "Re-score called"],
  "ev.stage_concluded": ["评审阶段结束", "Review stage concluded"],
  "ev.evaluation_summarizing": ["汇总评审结果", "Summarizing"],
  "ev.ranking_computed": ["计算排名", "Ranking computed"],
  "ev.report_generated": ["生成评标报告", "Report generated"],
  "ev.report_signed": ["签署评标报告", "Report signed"],
  "ev.evaluation_closed": ["评标结束", "Evaluation closed"],
  "ev.supervisor_warning": ["监督预警", "Supervisor's warning"],
  "ev.evaluation_suspended": ["评标暂停", "Evaluation suspended"],
  "ev.evaluation_resumed": ["评标恢复", "Evaluation resumed"],
  "ev.evaluation_void": ["评标作废", "Evaluation void"],
  "ev.media_segment": ["录像分段入档", "Recording segment recorded"],
  "ev.signal": ["预警信号", "Warning signal"],
  "evstatus.draft": ["草稿", "draft"],
  "evstatus.drawing": ["抽取专家中", "drawing the committee"],
  "evstatus.convening": ["专家签到中", "convening"],
  "evstatus.evaluating": ["评审中", "evaluating"],
  "evstatus.summarizing": ["汇总中", "summarizing"],
  "evstatus.signing": ["签署评标报告中", "signing the report"],
  "evstatus.closed": ["评标已结束", "closed"],
  "evstatus.void": ["评标已作废", "void"],
  "evstatus.suspended": ["已暂停", "suspended"],
  "link.up": ["终端在线", "device online"],
  "link.down": ["终端离线", "device offline"],

  // supervisor wall
  "sup.title": ["监管大屏（监督）", "Supervisor wall"],
  "sup.me": ["监督人员", "Supervisor"],
  "sup.overview": ["监管范围内的会话", "Sessions in your remit"],
  "sup.none": ["暂无会话。", "No sessions."],
  "sup.kind.opening": ["开标", "Opening"],
  "sup.kind.evaluation": ["评标", "Evaluation"],
  "sup.col.kind": ["类型", "Kind"],
  "sup.col.title": ["名称", "Title"],
  "sup.col.status": ["状态", "Status"],
  "sup.col.link": ["实时连接", "Live link"],
  "sup.col.latest": ["最新公开事件", "Latest public event"],
  "sup.live_count": ["{n}/{m} 个会话实时连接", "{n} of {m} sessions live"],
  "sup.refresh_list": ["刷新会话列表", "Reload the list of sessions"],
  "sup.feed": ["实时事件（最新在上）", "Live events (newest first)"],
  "sup.feed.label": ["{title} 的实时事件", "Live events of {title}"],
  "sup.warnings": ["预警与暂停", "Warnings and suspension"],
  "sup.warn.label": ["预警内容（所有参与方可见，记入档案）", "Warning (every participant sees it; recorded)"],
  "sup.warn.send": ["发出预警", "Raise the warning"],
  "sup.warn.empty": ["请填写预警内容。", "Write the warning first."],
  "sup.warn.sent": ["预警已发出（公开事件 #{n}）。", "Warning raised (public event #{n})."],
  "sup.warn.list": ["已发出的预警", "Warnings raised"],
  "sup.warn.none": ["暂无预警。", "No warnings."],
  "sup.reason.label": ["暂停/恢复原因（通知所有参与方，记入开标记录）", "Reason to suspend or resume (everyone is told; recorded)"],
  "sup.suspend": ["暂停开标", "Suspend the opening"],
  "sup.resume": ["恢复开标", "Resume the opening"],
  "sup.reason.empty": ["请填写原因。", "A reason is required."],
  "sup.done": ["已完成：{what}（公开事件 #{n}）", "Done: {what} (public event #{n})"],
  "sup.opening_note": [
    "开标中监督可暂停或恢复开标（须写明原因）；主持人和投标人会看到原因。",
    "In an opening the supervisor may suspend or resume it with a reason; the host and the bidders see the reason.",
  ],
  "sup.suspended": ["已暂停：{reason}", "Suspended: {reason}"],
  "sup.video": ["评标室画面", "Room video"],
  "sup.video.watch": ["观看 {room}", "Watch {room}"],
  "sup.video.stop": ["停止观看", "Stop watching"],
  "sup.video.idle": ["选择一个评标室观看其实时画面。", "Choose a room to watch its live video."],
  "sup.video.connecting": ["正在连接 {room}…", "Connecting to {room}…"],
  "sup.video.playing": ["正在播放 {room}", "Playing {room}"],
  "sup.video.failed": ["画面连接失败：{why}", "The video link failed: {why}"],
  "sup.video.none": ["尚未抽取评标室。", "No rooms drawn yet."],
  "sup.video.label": ["{room} 的实时画面", "Live video of {room}"],
  "sup.rooms": ["评标室", "Rooms"],
  "sup.room.lead": ["主场", "lead site"],
  "sup.room.secondary": ["副场", "secondary site"],
  "sup.members": ["专家签到：{n}/{m}", "Experts signed in: {n} of {m}"],
  "sup.fact.bids": ["投标", "Bids"],
  "sup.fact.members": ["专家", "Experts"],
  "sup.bids": ["有效投标文件：{n}", "Valid bids: {n}"],
  "sup.bids_hidden": ["截止前不显示投标数量（规则 4）", "Bid count hidden before the deadline (rule 4)"],
  "sup.archive": ["档案", "Archive"],
  "sup.archive.download": ["下载档案（ZIP）", "Download the archive (ZIP)"],
  "sup.archive.busy": ["正在导出档案…", "Exporting the archive…"],
  "sup.archive.done": ["已下载 {name}（{size}）；可用 bidbridge verify-archive 离线验证。", "Downloaded {name} ({size}); check it offline with bidbridge verify-archive."],
  "sup.signals": ["围标串标与评标不公预警信号", "Bid-rigging and unfair-evaluation signals"],
  "sup.signals.none": [
    "暂无预警信号。系统从开标和评标记录中发现可疑迹象时，会在此列出并附证据。",
    "No signals. When the record shows signs of bid rigging or unfair evaluation, they are listed here with their evidence.",
  ],
  "sup.signal.score": ["可疑程度 {score}", "Score {score}"],
  "sup.signal.subjects": ["涉及：{who}", "Concerns: {who}"],
  "sup.signal.evidence": ["证据", "Evidence"],
  "sup.signal.kind.same_origin": ["同一来源上传", "same upload origin"],
  "sup.signal.kind.same_hands": ["同一人编制", "same hands"],
  "sup.signal.kind.same_money": ["同一资金来源", "same money"],
  "sup.signal.kind.price_patterns": ["报价规律异常", "price pattern"],
  "sup.signal.kind.certificate_trail": ["证书使用轨迹", "certificate trail"],
  "sup.signal.kind.unfair_evaluation": ["评标不公", "unfair evaluation"],
  "sup.jump": ["转到 {title}", "Go to {title}"],
  "sup.opening_of": ["来自开标 {id}", "from opening {id}"],
};

export const I18N = { zh: {}, en: {} };
for (const [key, [zh, en]] of Object.entries(TEXT)) {
  I18N.zh[key] = zh;
  I18N.en[key] = en;
}

/** A page's own texts join the dictionary (a key app.js has keeps its text); the page is filled again. */
export function addTexts(table) {
  for (const [key, [zh, en]] of Object.entries(table)) {
    if (!(key in I18N.zh)) I18N.zh[key] = zh;
    if (!(key in I18N.en)) I18N.en[key] = en;
  }
  applyI18n();
}

export function getLang() {
  try {
    return localStorage.getItem(LANG_KEY) === "en" ? "en" : "zh";
  } catch {
    return "zh";
  }
}

let lang = getLang();

export function currentLang() {
  return lang;
}

/** A key's text in the current language, or `fallback` when the dictionary has none. */
export function textOr(key, fallback) {
  return I18N[lang][key] ? t(key) : fallback;
}

export function t(key, vars = {}) {
  const text = I18N[lang][key] ?? I18N.zh[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
}

/** Fill elements marked data-i18n (text), data-i18n-aria (aria-label), data-i18n-title. */
export function applyI18n(root = document) {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-aria]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAria));
  }
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.setAttribute("placeholder", t(el.dataset.i18nPlaceholder));
  }
  const title = document.body?.dataset.titleKey;
  if (title) document.title = `${t(title)} · BidBridge`;
  for (const el of root.querySelectorAll("[data-lang-switch]")) {
    el.textContent = t("lang.switch");
    el.setAttribute("aria-label", t("lang.switch.label"));
  }
}

export function setLang(next) {
  lang = next === "en" ? "en" : "zh";
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch {
    /* private mode: the switch still works for this page */
  }
  applyI18n();
  document.dispatchEvent(new CustomEvent("langchange", { detail: lang }));
}

// --- DOM helpers -----------------------------------------------------------------------------

/** h("p", {class: "x", "data-testid": "y"}, "text", child, ...): text always goes in as text. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** Say something to screen readers (a polite live region). */
export function announce(text) {
  let region = document.getElementById("announcer");
  if (!region) {
    region = h("div", { id: "announcer", class: "visually-hidden", "aria-live": "polite" });
    document.body.append(region);
  }
  region.textContent = "";
  setTimeout(() => (region.textContent = text), 30);
}

/** A command line with a copy button (commands are the agent's part of the work). */
export function commandBlock(command, testid) {
  const code = h("code", { "data-testid": testid }, command);
  const button = h("button", { type: "button", class: "small secondary" }, t("common.copy"));
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(command);
      button.textContent = t("common.copied");
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
  });
  return h("div", { class: "command" }, code, button);
}

// --- formatting --------------------------------------------------------------------------------

/** Milliseconds since the epoch of an ISO instant (microseconds and offsets accepted). */
export function parseTime(text) {
  if (!text) return NaN;
  const trimmed = String(text).replace(/(\.\d{3})\d+/, "$1");
  return Date.parse(trimmed);
}

const partsCache = new Map();
function formatter(withSeconds) {
  const key = `${withSeconds}`;
  if (!partsCache.has(key)) {
    partsCache.set(
      key,
      new Intl.DateTimeFormat("en-GB", {
        timeZone: "Asia/Shanghai",
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        second: withSeconds ? "2-digit" : undefined,
        hourCycle: "h23",
      }),
    );
  }
  return partsCache.get(key);
}

/** An instant as Beijing time, "2026-03-01 09:30:00" (stored UTC, shown Asia/Shanghai). */
export function fmtTime(value, withSeconds = true) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (!Number.isFinite(ms)) return t("common.dash");
  const p = Object.fromEntries(formatter(withSeconds).formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}${withSeconds ? `:${p.second}` : ""}`;
}

export function fmtDuration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(total / 86400);
  const hh = String(Math.floor((total % 86400) / 3600)).padStart(2, "0");
  const mm = String(Math.floor((total % 3600) / 60)).padStart(2, "0");
  const ss = String(total % 60).padStart(2, "0");
  return `${d ? t("cd.days", { d }) : ""}${hh}:${mm}:${ss}`;
}

/** Integer fen as yuan with two decimals, grouped (no floating point). */
export function fmtFen(fen) {
  if (typeof fen !== "number" || !Number.isInteger(fen)) return t("common.dash");
  const neg = fen < 0;
  const abs = Math.abs(fen);
  const yuan = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${neg ? "-" : ""}${yuan}.${String(abs % 100).padStart(2, "0")}`;
}

export function fmtSize(bytes) {
  if (typeof bytes !== "number") return t("common.dash");
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]} (${bytes.toLocaleString("en")} B)`;
}

/** "zh / en" texts from the server: the part in the current language first. */
export function splitBilingual(text) {
  const [zh, ...rest] = String(text || "").split(" / ");
  return { zh, en: rest.join(" / ") || zh };
}

// --- errors ------------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, body) {
    super(`${body.code}: ${body.en}`);
    this.status = status;
    this.code = body.code;
    this.zh = body.zh;
    this.en = body.en;
    this.detail = body.detail || "";
  }
}

const HINTS = {
  CHALLENGE_INVALID: "hint.link",
  TOKEN_INVALID: "hint.token",
  NETWORK: "hint.network",
};

/** Show {code, zh, en, detail} in `el` (role=alert): both languages, the current one first. */
export function showError(el, err) {
  if (!el) return;
  if (!err) {
    el.hidden = true;
    el.replaceChildren();
    return;
  }
  const zh = h("span", { lang: "zh-CN", "data-testid": "error-zh" }, err.zh || "");
  const en = h("span", { lang: "en", "data-testid": "error-en" }, err.en || "");
  const texts = lang === "zh" ? [zh, " / ", en] : [en, " / ", zh];
  const parts = [h("strong", { class: "code", "data-testid": "error-code" }, err.code || "ERROR"), " ", ...texts];
  if (err.detail) parts.push(h("span", { class: "detail" }, ` (${err.detail})`));
  const hint = HINTS[err.code];
  if (hint) parts.push(h("span", { class: "hint" }, I18N.zh[hint] + " / " + I18N.en[hint]));
  el.replaceChildren(...parts);
  el.hidden = false;
}

/**
 * The trimmed value of a field that must be filled in; when it is empty, null: `errorEl` shows
 * `error` ({code, zh, en}) and the field gets the focus.
 */
export function requiredValue(input, errorEl, error) {
  const value = input.value.trim();
  if (value) return value;
  showError(errorEl, error);
  input.focus();
  return null;
}

export function showNotice(el, text) {
  if (!el) return;
  el.textContent = text || "";
  el.hidden = !text;
}

// --- auth and REST -------------------------------------------------------------------------------

export function saveAuth(out) {
  const keep = {
    token: out.token,
    role: out.role,
    party_id: out.party_id,
    name: out.name,
    issued_at: out.issued_at,
    expires_at: out.expires_at,
    session_id: out.session_id,
  };
  sessionStorage.setItem(AUTH_KEY + out.session_id, JSON.stringify(keep));
}

export function loadAuth(sessionId) {
  if (!sessionId) return null;
  try {
    const raw = sessionStorage.getItem(AUTH_KEY + sessionId);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

let bearer = null;

export function useToken(token) {
  bearer = token;
}

/** The bearer token in use now (renewals replace it). */
export function currentToken() {
  return bearer;
}

const TOKEN_LIFE_MS = 30 * 60000;

/**
 * Keep the sign-in alive: when less than half of the token's life is left (by the server's clock),
 * trade it for a fresh one and keep that in this tab. An expired token cannot be renewed: then
 * `onExpired(err)` says so and the person asks the agent for a new link.
 */
export function keepTokenFresh(auth, onExpired = () => {}) {
  let current = { ...auth };
  let busy = false;
  let expired = false;
  useToken(current.token);
  const check = async () => {
    if (busy || expired) return;
    const exp = parseTime(current.expires_at);
    const issued = parseTime(current.issued_at);
    const life = Number.isFinite(issued) && exp > issued ? exp - issued : TOKEN_LIFE_MS;
    if (!Number.isFinite(exp) || exp - serverNow() > life / 2) return;
    busy = true;
    try {
      const out = await api("POST", "/api/auth/refresh");
      current = { ...current, token: out.token, issued_at: out.issued_at, expires_at: out.expires_at };
      useToken(out.token);
      saveAuth(current);
      document.body.dataset.tokenRenewals = String(Number(document.body.dataset.tokenRenewals || 0) + 1);
    } catch (err) {
      if (err && err.code === "TOKEN_INVALID") {
        expired = true;
        onExpired(err);
      }
    } finally {
      busy = false;
    }
  };
  setInterval(check, 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") check();
  });
  return { check, auth: () => current };
}

/** JSON request to the API; a refusal becomes an ApiError with the server's {code, zh, en}. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, {
      code: "NETWORK",
      zh: "网络错误，无法连接服务器",
      en: "network error: the server cannot be reached",
    });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const fallback = { code: `HTTP_${response.status}`, zh: "请求失败", en: "the request failed" };
    throw new ApiError(response.status, data && data.code ? data : fallback);
  }
  return data;
}

// --- event positions (docs/positions.md) ----------------------------------------------------------

/** The public stream: every viewer follows it. */
export const ALL = "all";

/** A public event: "all" is in its audience (it is then numbered in the public stream). */
export function isPublic(e) {
  return Array.isArray(e.audience) && e.audience.includes(ALL);
}

/** The streams an event is a member of for this viewer: the keys of its `pos` but "all", and
 * "all" when it is public (a private event's `pos.all` only places it among the public ones). */
export function memberStreams(e) {
  const streams = Object.keys(e.pos || {}).filter((t) => t !== ALL);
  if (isPublic(e)) streams.push(ALL);
  return streams;
}

/** An event as the server sends it to a viewer: an id and positions (no global number). */
export function isViewerEvent(e) {
  return (
    !!e &&
    typeof e.id === "string" &&
    e.id !== "" &&
    !!e.pos &&
    typeof e.pos === "object" &&
    Number.isInteger(e.pos[ALL]) &&
    Object.values(e.pos).every((n) => Number.isInteger(n) && n >= 0)
  );
}

/** The event is after a view read at heads `heads`: some member stream is past the view's head. */
export function isAfter(e, heads) {
  return memberStreams(e).some((t) => e.pos[t] > ((heads && heads[t]) || 0));
}

/** Heads `a` hold everything heads `b` hold (no stream of `b` is further on): a view read at `a`
 * is not older than one read at `b`. */
export function covers(a, b) {
  return Object.entries(b || {}).every(([t, n]) => ((a && a[t]) || 0) >= n);
}

/** Log order among events received out of order: (pos.all, public before private); 0 for a tie
 * (which keeps the arrival order in a stable sort). */
export function compareEvents(a, b) {
  return a.pos[ALL] - b.pos[ALL] || (isPublic(a) ? 0 : 1) - (isPublic(b) ? 0 : 1);
}

/** Put `ev` in its place in `list` (kept in log order; after the events it ties with). */
export function insertEvent(list, ev) {
  let i = list.length;
  while (i > 0 && compareEvents(list[i - 1], ev) > 0) i -= 1;
  list.splice(i, 0, ev);
}

/** The heads reached: a view's heads moved on by every event's member streams (and `all`). */
export function headsOf(viewPos, events) {
  const heads = { ...(viewPos || {}) };
  for (const e of events) {
    for (const t of [...memberStreams(e), ALL]) heads[t] = Math.max(heads[t] || 0, e.pos[t] || 0);
  }
  return heads;
}

/** Positions as text, "all:7 bidder:911…:3" ("all" first, then by name): the `after=` form of the
 * event routes, for data attributes and cache keys. */
export function posText(pos) {
  const names = Object.keys(pos || {}).sort((x, y) => (x === ALL ? -1 : y === ALL ? 1 : x.localeCompare(y)));
  return names.map((t) => `${t}:${pos[t]}`).join(" ");
}

/** The number a page shows for an event: "#n" of a public event in the public stream, nothing for
 * a private one (its own streams' numbers mean nothing to the reader). */
export function shownNumber(e) {
  return isPublic(e) ? `#${e.pos[ALL]}` : "";
}

/** The public number in a command's answer (`pos`: the caller's positions of the events it
 * appended; one map or a list of them, the last one counts), or a dash. */
export function answeredNumber(out) {
  const pos = out && Array.isArray(out.pos) ? out.pos[out.pos.length - 1] : out && out.pos;
  return pos && Number.isInteger(pos[ALL]) ? pos[ALL] : t("common.dash");
}

// --- the hall follower (socket.io) -----------------------------------------------------------------

let clockOffset = 0;

/** The server's clock as last measured by any follower on this page (ms since the epoch). */
export function serverNow() {
  return Date.now() + clockOffset;
}

const REPLAY_ANSWER_MS = 15000;

/**
 * Follows one session's hall (docs/positions.md). The cursor (stream -> n: the highest number
 * received with nothing missing below it) goes with every (re)connection as `last`: the server
 * replays what came after it, says "replayed", then sends live events. An event is dropped when
 * its id was seen or none of its streams is past the cursor; the next one moves the cursor on and
 * goes to `onEvent`; one after a gap is held and a replay after the cursor is asked for. What
 * arrives during a replay is held too and let through at "replayed" in log order: the replay's
 * events first, then the live ones it did not have. The clock offset is measured from the
 * server's "time" (the only authority): serverNow() = Date.now() + offset.
 */
export class Follower {
  constructor({ token, sessionId, onEvent, onStatus, onReplayed }) {
    this.token = token;
    this.sessionId = sessionId;
    this.onEvent = onEvent;
    this.onStatus = onStatus || (() => {});
    this.onReplayed = onReplayed || (() => {});
    this.cursor = {};
    this.seen = new Set(); // the ids let through
    this.held = new Map(); // id -> event waiting for a replay to end or for a gap to be filled
    this.replaying = true;
    this.asked = null; // the cursor a replay was asked after (on a gap), until it is answered
    this.offset = 0;
    this.synced = false;
    this.socket = null;
    let period = 30000;
    try {
      period = Number(localStorage.getItem(SYNC_KEY)) || period;
    } catch {
      /* default */
    }
    this.syncPeriod = Math.max(200, period);
  }

  connect() {
    const socket = io("/hall", {
      // Called before every (re)connection: the server replays after the cursor, then "replayed".
      auth: (cb) => {
        this.replaying = true;
        this.asked = null;
        const auth = {
          token: bearer || this.token,
          session_id: this.sessionId,
          batch: true, // a commit's live events come as one "events" list: one frame, not one each
        };
        if (Object.keys(this.cursor).length) auth.last = { ...this.cursor };
        cb(auth);
      },
      transports: ["websocket", "polling"],
      reconnectionDelay: 500,
      reconnectionDelayMax: 5000,
    });
    this.socket = socket;
    this.onStatus("connecting");
    // socket.io-client delivers what arrived with the connection (the replay, even "replayed")
    // before it fires "connect": the status is whatever the replay left.
    socket.on("connect", () => {
      this.onStatus(this.replaying ? "replaying" : "live");
      this.syncClock();
    });
    socket.on("disconnect", (reason) => {
      this.onStatus("reconnecting", this.where());
      if (reason === "io server disconnect") setTimeout(() => socket.connect(), 1000);
    });
    socket.on("connect_error", (err) => {
      if (err && err.data && err.data.code) {
        this.onStatus("refused", err.data);
      } else {
        this.onStatus("reconnecting", this.where());
      }
    });
    socket.on("time", (data) => this.setServerTime(data && data.now, Date.now(), Date.now()));
    socket.on("event", (ev) => this.receive(ev));
    socket.on("events", (list) => {
      if (Array.isArray(list)) list.forEach((ev) => this.receive(ev));
    });
    socket.on("replayed", (data) => this.replayed(data && data.pos));
    this.timer = setInterval(() => this.syncClock(), this.syncPeriod);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.syncClock();
    });
  }

  /** Where the follower stands, for the connection indicator: the last public event received. */
  where() {
    return { all: this.cursor[ALL] || 0 };
  }

  /** What the cursor makes of an event: "duplicate", "gap" (something before it is missing) or "next". */
  place(e) {
    if (this.seen.has(e.id)) return "duplicate";
    const at = (t) => this.cursor[t] || 0;
    const members = memberStreams(e);
    if (members.every((t) => e.pos[t] <= at(t))) return "duplicate";
    if (members.some((t) => e.pos[t] > at(t) + 1)) return "gap";
    if (!isPublic(e) && e.pos[ALL] > at(ALL)) return "gap"; // a public event before it is missing
    return "next";
  }

  receive(e) {
    if (!isViewerEvent(e) || this.place(e) === "duplicate") return;
    if (this.replaying) {
      this.hold(e);
    } else if (this.place(e) === "gap") {
      this.hold(e);
      this.askReplay();
    } else {
      this.pass(e);
      if (this.held.size) this.release();
    }
  }

  /** Hold an event; a copy held before gives way (the replay's copy takes its place in the order). */
  hold(e) {
    this.held.delete(e.id);
    this.held.set(e.id, e);
  }

  /** The held events in log order (a stable sort: ties stay in the order they arrived). */
  heldInOrder() {
    return [...this.held.values()].sort(compareEvents);
  }

  pass(e) {
    this.seen.add(e.id);
    for (const t of memberStreams(e)) this.cursor[t] = Math.max(this.cursor[t] || 0, e.pos[t]);
    this.onEvent(e);
  }

  /** Let through the held events that are next now, in log order; drop those already received. */
  release() {
    let waiting = this.heldInOrder();
    for (let moved = true; moved; ) {
      moved = false;
      const rest = [];
      for (const e of waiting) {
        const where = this.place(e);
        if (where === "next") {
          this.pass(e);
          moved = true;
        } else if (where === "gap") {
          rest.push(e);
        }
      }
      waiting = rest;
    }
    this.held = new Map(waiting.map((e) => [e.id, e]));
  }

  /** Let every held event through (a gap no replay fills: the server has nothing more to send). */
  flush() {
    const held = this.heldInOrder();
    this.held = new Map();
    for (const e of held) if (this.place(e) !== "duplicate") this.pass(e);
  }

  /** The end of a replay: its events, then the live ones held meanwhile; `pos` (nothing at or
   * below it is missing now) moves the cursor on. A gap left asks once more. */
  replayed(pos) {
    this.release();
    for (const [t, n] of Object.entries(pos && typeof pos === "object" ? pos : {})) {
      if (Number.isInteger(n)) this.cursor[t] = Math.max(this.cursor[t] || 0, n);
    }
    this.release();
    const asked = this.asked;
    this.asked = null;
    this.replaying = false;
    if (this.held.size) {
      if (asked && posText(asked) === posText(this.cursor)) this.flush(); // the replay brought nothing
      else this.askReplay();
    }
    if (!this.replaying) this.onStatus("live");
    this.onReplayed({ ...this.cursor });
  }

  /** A gap: ask for the events after the cursor; live events wait meanwhile. */
  askReplay() {
    const socket = this.socket;
    if (this.replaying || !socket || !socket.connected) return; // a (re)connection replays anyway
    this.replaying = true;
    const asked = { ...this.cursor };
    this.asked = asked;
    this.onStatus("replaying");
    socket
      .timeout(REPLAY_ANSWER_MS)
      .emitWithAck("replay", { after: asked })
      .then(
        (refusal) => {
          if (!refusal || !refusal.code || this.asked !== asked) return;
          // Refused (the cursor is not one the server takes): nothing comes; go on with what is here.
          this.asked = null;
          this.replaying = false;
          this.flush();
          this.onStatus("live");
        },
        () => {
          // No answer: connect again, which replays after the cursor.
          if (this.asked === asked && socket.connected) socket.disconnect().connect();
        },
      );
  }

  setServerTime(now, sent, received) {
    const server = parseTime(now);
    if (!Number.isFinite(server)) return;
    this.offset = server - (sent + received) / 2;
    this.synced = true;
    clockOffset = this.offset;
  }

  async syncClock() {
    const socket = this.socket;
    if (!socket || !socket.connected) return;
    const sent = Date.now();
    try {
      const out = await socket.timeout(5000).emitWithAck("time");
      this.setServerTime(out && out.now, sent, Date.now());
    } catch {
      /* the next period tries again */
    }
  }

  serverNow() {
    return Date.now() + this.offset;
  }
}

// --- the fold ---------------------------------------------------------------------------------------

export const BEFORE_DEADLINE = ["published", "sign_in"];
export const ACTIVE = ["published", "sign_in", "sealed", "opening", "decrypting", "announcing", "confirming"];
export const OBJECTIONS_OPEN = ["opening", "decrypting", "announcing", "confirming"];
export const STAGES = ["sign_in", "sealed", "opening", "decrypting", "announcing", "confirming", "closed"];

function addMinutes(iso, minutes) {
  const ms = parseTime(iso);
  return Number.isFinite(ms) ? new Date(ms + minutes * 60000).toISOString() : iso;
}

function addMs(iso, ms) {
  const at = parseTime(iso);
  return Number.isFinite(at) ? new Date(at + ms).toISOString() : iso;
}

/** One event folded into the view (mirrors server/domain/opening.py `evolve` + views.py). */
function applyEvent(s, e, me) {
  const p = e.payload || {};
  const mine = (code) => me.role === "bidder" && code === me.party_id;
  const staff = me.role !== "bidder";
  const staffBid = (code) => (staff && Array.isArray(s.bids) ? s.bids.find((b) => b.bidder === code) : null);
  switch (e.type) {
    case "session_published":
      s.status = parseTime(e.at) >= parseTime(s.timetable.sign_in_opens) ? "sign_in" : "published";
      break;
    case "sign_in_opened":
      s.status = "sign_in";
      break;
    case "session_sealed":
      s.status = "sealed";
      break;
    case "session_failed":
      s.status = "failed";
      break;
    case "party_joined":
      if (s.present) {
        s.present[p.account] = p.role;
        s.supervisors_present = Object.values(s.present).filter((r) => r === "supervisor").length;
      }
      break;
    case "party_left":
      if (s.present) {
        delete s.present[p.account];
        s.supervisors_present = Object.values(s.present).filter((r) => r === "supervisor").length;
      }
      break;
    case "bidder_signed_in":
      if (mine(p.bidder)) s.signed_in = true;
      else if (staff && typeof s.signed_in_count === "number") s.signed_in_count += 1;
      break;
    case "bids_counted":
      if (staff) s.signed_in_count = p.signed_in;
      break;
    case "bid_uploaded":
      if (mine(p.bidder)) {
        const r = p.receipt || {};
        s.own_bid = {
          bidder: p.bidder,
          bidder_name: r.bidder_name || "",
          status: "uploaded",
          envelope_sha256: r.envelope_sha256,
          size: r.size,
          received_at: r.received_at,
          receipt_id: r.receipt_id,
          rehearsal: null,
          attempts: [],
          summary: null,
          via: null,
          security: null,
          confirmation: null,
        };
      }
      break;
    case "bid_retracted":
      if (mine(p.bidder) && s.own_bid) s.own_bid.status = "retracted";
      break;
    case "rehearsal_reported":
      if (mine(p.bidder) && s.own_bid) s.own_bid.rehearsal = p.passed ? "passed" : "failed";
      break;
    case "opening_started":
      s.status = "opening";
      break;
    case "decryption_opened":
      s.status = "decrypting";
      s.decrypt_closes_at = p.closes_at;
      break;
    case "bid_decrypted":
      if (mine(p.bidder) && s.own_bid) {
        s.own_bid.status = "decrypted";
        s.own_bid.summary = p.summary;
        s.own_bid.via = p.via;
        s.own_bid.attempts.push({ at: e.at, ok: true, code: "OK", cause: "bidder", message: "" });
      } else if (staffBid(p.bidder)) {
        const b = staffBid(p.bidder);
        b.status = "decrypted";
        b.attempts += 1;
      }
      break;
    case "decryption_failed":
      if (mine(p.bidder) && s.own_bid) {
        s.own_bid.status = "failed";
        s.own_bid.attempts.push(p.attempt);
      } else if (staffBid(p.bidder)) {
        const b = staffBid(p.bidder);
        b.status = "failed";
        b.attempts += 1;
      }
      break;
    case "incident_recorded":
      if (staff && Array.isArray(s.incidents)) {
        s.incidents.push({ at: e.at, by: e.actor, reason: p.reason, bidders: p.bidders });
      }
      break;
    case "security_recorded":
      if (mine(p.bidder) && s.own_bid) s.own_bid.security = p.security;
      break;
    case "decryption_closed":
      s.status = "announcing";
      break;
    case "bid_revoked":
    case "bid_withdrawn": {
      const status = e.type === "bid_revoked" ? "revoked" : "withdrawn";
      if (mine(p.bidder) && s.own_bid) s.own_bid.status = status;
      else if (staffBid(p.bidder)) staffBid(p.bidder).status = status;
      break;
    }
    case "table_published":
      s.table = p.table;
      s.table_sha256 = p.table_sha256;
      break;
    case "objection_raised":
      if (staff || p.public || mine(p.bidder)) {
        s.objections = s.objections || [];
        s.objections.push({
          id: p.id,
          bidder: p.bidder,
          text: p.text,
          at: e.at,
          reply: null,
          replied_at: null,
          public: p.public,
        });
      }
      break;
    case "objection_answered": {
      const o = (s.objections || []).find((x) => x.id === p.id);
      if (o) {
        o.reply = p.text;
        o.replied_at = e.at;
      }
      break;
    }
    case "confirmation_opened":
      s.status = "confirming";
      s.confirm_closes_at = p.closes_at;
      break;
    case "table_confirmed":
      if (mine(p.bidder) && s.own_bid) s.own_bid.confirmation = "signed";
      else if (staffBid(p.bidder)) staffBid(p.bidder).confirmation = "signed";
      break;
    case "confirmation_closed":
      for (const code of p.deemed || []) {
        if (mine(code) && s.own_bid) s.own_bid.confirmation = "deemed";
        else if (staffBid(code)) staffBid(code).confirmation = "deemed";
      }
      break;
    case "record_generated":
      s.record_sha256 = p.record_sha256;
      break;
    case "record_signed":
      s.record_signatures = [...new Set([...(s.record_signatures || []), p.role])].sort();
      break;
    case "record_published":
      s.status = "closed";
      break;
    case "session_suspended":
      s.suspended_from = s.status;
      s.status = "suspended";
      s._suspended_at = e.at;
      break;
    case "session_resumed": {
      const pausedAt = parseTime(s._suspended_at);
      const shift = (p.paused_microseconds || 0) / 1000;
      const pending = (iso) => !Number.isFinite(pausedAt) || parseTime(iso) > pausedAt;
      s.status = p.status;
      s.suspended_from = null;
      s._suspended_at = null;
      if (BEFORE_DEADLINE.includes(s.status) && pending(s.timetable.deadline)) {
        s.timetable.deadline = addMs(s.timetable.deadline, shift);
        if (s.status === "published" && pending(s.timetable.sign_in_opens)) {
          s.timetable.sign_in_opens = addMs(s.timetable.sign_in_opens, shift);
        }
      }
      if (s.status === "decrypting" && s.decrypt_closes_at && pending(s.decrypt_closes_at)) {
        s.decrypt_closes_at = addMs(s.decrypt_closes_at, shift);
      }
      if (s.status === "confirming" && s.confirm_closes_at && pending(s.confirm_closes_at)) {
        s.confirm_closes_at = addMs(s.confirm_closes_at, shift);
      }
      break;
    }
    case "platform_outage": {
      const ms = Math.round(p.extended_seconds * 1000);
      if (p.window === "decryption" && s.decrypt_closes_at) s.decrypt_closes_at = addMs(s.decrypt_closes_at, ms);
      else if (p.window === "confirmation" && s.confirm_closes_at) s.confirm_closes_at = addMs(s.confirm_closes_at, ms);
      break;
    }
    case "window_extended":
      if (p.window === "deadline") s.timetable.deadline = addMinutes(s.timetable.deadline, p.minutes);
      else if (p.window === "decryption" && s.decrypt_closes_at) {
        s.decrypt_closes_at = addMinutes(s.decrypt_closes_at, p.minutes);
      } else if (p.window === "confirmation" && s.confirm_closes_at) {
        s.confirm_closes_at = addMinutes(s.confirm_closes_at, p.minutes);
      }
      break;
    default:
      break; // session_created, bids_counted for bidders ... change nothing here
  }
}

/**
 * The page's state: the snapshot's view folded with every event after it (docs/positions.md: an
 * event is after a view read at heads `pos` when one of its streams is past the view's head), plus
 * what only the events tell (project and lot, reasons, messages, others' confirmations once
 * public). `facts.pos` holds the heads reached (the viewer's own streams), `facts.tableEvent` the
 * id of the event that published the table.
 */
export function derive(snapshot, events, me) {
  const view = structuredClone(snapshot.view);
  const facts = {
    meta: {},
    suspension: null,
    extension: null,
    failure: null,
    bidsOpened: null,
    rehearsal: null,
    incidents: [],
    confirmations: {},
    tableEvent: null,
    pos: headsOf(snapshot.pos, events),
    evidence: null,
    confirmationClosed: false,
  };
  for (const e of events) {
    const p = e.payload || {};
    if (e.type === "session_created") facts.meta = p;
    else if (e.type === "session_suspended") {
      facts.suspension = { reason: p.reason, at: e.at, actor: e.actor };
      if (!isAfter(e, snapshot.pos)) view._suspended_at = e.at;
    } else if (e.type === "session_resumed") facts.suspension = null;
    else if (e.type === "window_extended") facts.extension = { window: p.window, minutes: p.minutes, reason: p.reason, at: e.at };
    else if (e.type === "session_failed") facts.failure = p;
    else if (e.type === "opening_started") facts.bidsOpened = p.bids;
    else if (e.type === "rehearsal_reported" && p.bidder === me.party_id) facts.rehearsal = p;
    else if (e.type === "incident_recorded") facts.incidents.push({ at: e.at, reason: p.reason, bidders: p.bidders });
    else if (e.type === "table_confirmed") facts.confirmations[p.bidder] = "signed";
    else if (e.type === "confirmation_closed") {
      facts.confirmationClosed = true;
      for (const c of p.deemed || []) facts.confirmations[c] = "deemed";
    }
    else if (e.type === "table_published") facts.tableEvent = e.id;
    else if ((e.type === "bid_revoked" || e.type === "bid_withdrawn") && p.bidder === me.party_id) facts.evidence = p.evidence;
  }
  for (const e of events) if (isAfter(e, snapshot.pos)) applyEvent(view, e, me);
  return { view, facts, events };
}

/** The countdown a page shows now: {key, target ms, frozen remaining ms} or null. */
export function countdownOf(view, facts) {
  const targets = {
    published: ["cd.to_sign_in", view.timetable.sign_in_opens],
    sign_in: ["cd.to_deadline", view.timetable.deadline],
    decrypting: ["cd.to_decrypt_close", view.decrypt_closes_at],
    confirming: ["cd.to_confirm_close", view.record_sha256 ? null : view.confirm_closes_at],
  };
  if (view.status === "suspended") {
    const [, target] = targets[view.suspended_from] || [];
    const at = parseTime(view._suspended_at || (facts.suspension && facts.suspension.at));
    if (!target || !Number.isFinite(at)) return null;
    return { key: "cd.paused", target: null, frozen: parseTime(target) - at };
  }
  const [key, target] = targets[view.status] || [];
  if (!key || !target) return null;
  return { key, target: parseTime(target), frozen: null };
}

// --- the page model ---------------------------------------------------------------------------------

/**
 * What the hall's, an evaluation's and the supervisor wall's models share: who is looking, the
 * callbacks, the view read from the server (`snapshot`: the view and the viewer's heads `pos` when
 * it was read), the events in log order and the follower of the session's hall. `start()` fetches
 * (the subclass's `refresh()`) and then follows; every event goes to the subclass's `add()`, the
 * follower's end of replay to its `replayed()`.
 */
export class FollowedModel {
  constructor({ sessionId, auth, onChange, onConn, onError }) {
    this.sessionId = sessionId;
    this.me = { role: auth.role, party_id: auth.party_id, name: auth.name };
    this.onChange = onChange || (() => {});
    this.onConn = onConn || (() => {});
    this.onError = onError || (() => {});
    this.snapshot = null;
    this.events = [];
    this.follower = new Follower({
      token: auth.token,
      sessionId,
      onEvent: (ev) => this.add(ev),
      onStatus: (status, data) => this.onConn(status, data),
      onReplayed: () => this.replayed(),
    });
  }

  async start() {
    await this.refresh();
    this.follower.connect();
  }

  serverNow() {
    return this.follower.serverNow();
  }

  /** Keep a view just read (`{view, pos}` from the server) unless the one held was read later;
   * true when kept. */
  keepView(out) {
    const pos = (out && out.pos) || {};
    if (this.snapshot && !covers(pos, this.snapshot.pos)) return false;
    this.snapshot = { view: out.view, pos };
    return true;
  }

  /** Put a followed event in its place; true when the view held is older than the event. */
  place(ev) {
    insertEvent(this.events, ev);
    return !!this.snapshot && isAfter(ev, this.snapshot.pos);
  }

  /** The viewer's heads reached: the view's moved on by every event held. */
  heads() {
    return headsOf(this.snapshot ? this.snapshot.pos : {}, this.events);
  }

  /** The last public event's number (a page's "latest event"). */
  latest() {
    return this.heads()[ALL] || 0;
  }
}

const REFRESH_ON = new Set(["session_sealed", "session_failed"]);

/**
 * One page's model of the session: GET the view, follow the hall, recompute on every change.
 * `onChange(state)` is called (batched) after every change; `onConn(status, data)` for the link.
 */
export class HallModel extends FollowedModel {
  constructor(options) {
    super(options);
    this.state = null;
    this.pending = false;
    this.refreshing = null;
  }

  replayed() {
    this.changed();
  }

  /** GET the session as this role may see it (the snapshot the events are folded onto). */
  async refresh() {
    if (this.refreshing) return this.refreshing;
    this.refreshing = (async () => {
      try {
        this.keepView(await api("GET", `/api/sessions/${encodeURIComponent(this.sessionId)}`));
        this.changed();
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  add(ev) {
    // Staff learn the list of bids only from the view after the deadline (rule 4): fetch again.
    if (this.place(ev) && this.me.role !== "bidder" && REFRESH_ON.has(ev.type)) {
      this.refresh().catch((err) => this.onError(err));
    }
    this.changed();
  }

  changed() {
    if (this.pending || !this.snapshot) return;
    this.pending = true;
    setTimeout(() => {
      this.pending = false;
      this.state = derive(this.snapshot, this.events, this.me);
      this.onChange(this.state);
    }, 0);
  }
}

// --- shared page pieces ---------------------------------------------------------------------------

/** The session's title and facts in the header of a hall page; `meKey` and `meText` name its user. */
export function renderHallMeta(state, meKey, meText) {
  const { view, facts } = state;
  const m = facts.meta || {};
  const item = (key, value, testid) =>
    h("div", { class: "meta-item" }, h("span", { class: "label" }, t(key)), h("span", { class: "value", "data-testid": testid }, value));
  byTestId("session-meta").replaceChildren(
    h("div", { class: "meta-title", "data-testid": "title" }, view.title || m.title || ""),
    h(
      "div",
      { class: "meta-row" },
      item("session.project", m.project_code || "—", "project"),
      item("session.lot", view.lot_id, "lot"),
      item("session.tenderer", m.tenderer_name || "—", "tenderer"),
      item(meKey, meText, "me"),
    ),
  );
}

/** A hall page's banner: suspended, failed or extended; `note` wraps the suspension's note. */
export function renderHallBanner(state, note = (text) => text) {
  const { view, facts } = state;
  const banner = byTestId("banner");
  if (view.status === "suspended") {
    const reason = facts.suspension ? facts.suspension.reason : "";
    banner.replaceChildren(h("strong", {}, t("suspended.banner", { reason })), " ", note(t("suspended.note")));
    banner.className = "banner warn";
    banner.hidden = false;
  } else if (view.status === "failed") {
    banner.textContent = t("failed.banner", { n: (facts.failure && facts.failure.min_bids) || view.timetable.min_bids });
    banner.className = "banner bad";
    banner.hidden = false;
  } else if (facts.extension && !["closed", "failed"].includes(view.status)) {
    const x = facts.extension;
    banner.textContent = t("extended.note", { window: t(`window.${x.window}`), minutes: x.minutes, reason: x.reason });
    banner.className = "banner info";
    banner.hidden = false;
  } else {
    banner.hidden = true;
  }
}

/** The stage a session stands in: its status, or while suspended the status it was suspended from. */
export function effectiveStatus(view) {
  return view.status === "suspended" ? view.suspended_from : view.status;
}

/** Before the bid deadline (also while suspended before it). */
export function beforeDeadline(view) {
  return BEFORE_DEADLINE.includes(effectiveStatus(view));
}

/** The stage stepper (ol with aria-current on the current stage). */
export function renderStages(el, view) {
  const status = effectiveStatus(view);
  const index = status === "published" ? 0 : STAGES.indexOf(status);
  const items = STAGES.map((stage, i) => {
    const state = status === "failed" ? (i === 0 ? "done" : "todo") : i < index ? "done" : i === index ? "current" : "todo";
    return h(
      "li",
      { class: `stage ${state}`, "aria-current": state === "current" ? "step" : null, "data-stage": stage },
      t(`stage.${stage}`),
    );
  });
  el.replaceChildren(...items);
}

export function statusText(view) {
  if (view.status === "suspended") {
    return `${t("status.suspended")} (${t(`status.${view.suspended_from}`)})`;
  }
  return t(`status.${view.status}`);
}

/** Update a countdown element: text, data-remaining (seconds) and its label. */
export function tickCountdown(el, labelEl, state, now) {
  const cd = state ? countdownOf(state.view, state.facts) : null;
  if (!cd) {
    labelEl.textContent = t("cd.none");
    el.textContent = t("common.dash");
    el.dataset.remaining = "";
    el.classList.remove("urgent");
    return;
  }
  const remaining = cd.frozen !== null ? cd.frozen : cd.target - now;
  labelEl.textContent = remaining <= 0 && cd.frozen === null ? t("cd.due") : t(cd.key);
  el.textContent = fmtDuration(remaining);
  el.dataset.remaining = String(Math.max(0, Math.floor(remaining / 1000)));
  el.classList.toggle("urgent", cd.frozen === null && remaining < 5 * 60000);
}

/** The opening table (rows as published; confirmations as the events tell). */
export function renderTable(el, view, facts, me) {
  const table = view.table;
  if (!table) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "table-none" }, t("table.none")));
    return;
  }
  const fields = view.timetable.table_fields || [];
  const head = [
    "table.no",
    "table.bidder",
    "table.code",
    "table.status",
    "table.price",
    "table.duration",
    "table.quality",
    "table.pm",
    "table.security",
    "table.confirmation",
  ];
  const rows = table.rows.map((row, i) => {
    const sec = row.security
      ? `${t(`table.sec.${row.security.status}`)} ${fmtFen(row.security.amount_fen)}`
      : t("table.sec.none");
    const conf = facts.confirmations[row.bidder];
    const own = me.role === "bidder" && row.bidder === me.party_id;
    return h(
      "tr",
      { class: own ? "own" : null, "data-bidder": row.bidder },
      h("td", {}, String(i + 1)),
      h("th", { scope: "row" }, row.bidder_name || row.bidder, own ? h("span", { class: "tag" }, t("common.you")) : null),
      h("td", { class: "mono" }, row.bidder),
      h("td", {}, h("span", { class: `badge bid-${row.status}` }, t(`bid.${row.status}`))),
      h("td", { class: "num" }, fmtFen(row.price_fen)),
      h("td", { class: "num" }, row.duration_days ?? t("common.dash")),
      h("td", {}, row.quality ?? t("common.dash")),
      h("td", {}, row.project_manager ?? t("common.dash")),
      h("td", {}, sec),
      h("td", { "data-testid": `confirmation-${row.bidder}` }, conf ? t(`conf.${conf}`) : t("common.dash")),
      ...fields.map((f) => h("td", {}, row.fields && row.fields[f] != null ? String(row.fields[f]) : t("common.dash"))),
    );
  });
  el.replaceChildren(
    h(
      "div",
      { class: "table-wrap", tabindex: "0", role: "region", "aria-label": t("table.title") },
      h(
        "table",
        { "data-testid": "opening-table", "data-table-sha256": view.table_sha256 || "", "data-event-id": facts.tableEvent ?? "" },
        h("caption", {}, t("table.caption", { n: table.rows.length })),
        h("thead", {}, h("tr", {}, ...head.map((k) => h("th", { scope: "col" }, t(k))), ...fields.map((f) => h("th", { scope: "col" }, f)))),
        h("tbody", {}, ...rows),
      ),
    ),
    h("p", { class: "muted small" }, `${t("confirm.sha")}: `, h("span", { class: "mono" }, view.table_sha256 || "")),
  );
}

let hallStatus = null;

/**
 * What every hall page shows of a state: the body's status (and `data-events`, how many events the
 * page holds, `data-pos`, the heads reached in the viewer's own streams), the header's facts (`meKey`
 * and `meText` name the user), the banner (`note` wraps the suspension's note), the status line
 * (a change of status is announced), the stages and the opening table.
 */
export function renderHall(state, model, { meKey, meText, note }) {
  const { view, facts } = state;
  document.body.dataset.status = view.status;
  markBody(state.events, facts.pos);
  renderHallMeta(state, meKey, meText);
  renderHallBanner(state, note);
  const statusEl = byTestId("status");
  statusEl.textContent = statusText(view);
  statusEl.dataset.status = view.status;
  renderStages(byTestId("stages"), view);
  renderTable(byTestId("table"), view, facts, model.me);
  if (hallStatus !== null && hallStatus !== view.status) announce(statusText(view));
  hallStatus = view.status;
}

/** How far a page is: the events it holds (a count of what this viewer may see) and its heads. */
export function markBody(events, heads) {
  document.body.dataset.events = String(events.length);
  document.body.dataset.pos = posText(heads);
}

/**
 * One line of an event log: its public number (nothing for a private event), Beijing time, the
 * label and the `bits` of detail. The line carries the event's id, type and positions
 * (`data-pos`, the viewer's own streams; `data-public` when it is public); `attrs` adds to them.
 */
export function logLine(e, label, bits, attrs = {}) {
  return h(
    "li",
    { "data-id": e.id, "data-type": e.type, "data-pos": posText(e.pos), "data-public": isPublic(e), ...attrs },
    h("span", { class: "seq mono" }, shownNumber(e)),
    h("time", { datetime: e.at }, fmtTime(e.at)),
    h("span", { class: "what" }, label),
    bits.length ? h("span", { class: "detail" }, bits.filter(Boolean).join(" · ")) : null,
  );
}

/** What a log line says of an event's payload besides its label (`name(code)` names a bidder). */
export function eventBits(e, name) {
  const p = e.payload || {};
  const bits = [];
  if (p.bidder) bits.push(name(p.bidder));
  if (typeof p.reason === "string" && p.reason) bits.push(p.reason);
  if (e.type === "party_joined" || e.type === "party_left") bits.push(textOr(`role.${p.role}`, p.role || ""));
  if (e.type === "window_extended") bits.push(`${t(`window.${p.window}`)} +${p.minutes}`);
  if (e.type === "platform_outage") bits.push(`${t(`window.${p.window}`)} +${Math.ceil(p.extended_seconds)} s`);
  if (e.type === "decryption_failed" && p.attempt) bits.push(p.attempt.code);
  if (e.type === "objection_raised" || e.type === "objection_answered") bits.push(`#${p.id}`);
  if (e.type === "opening_started") bits.push(String(p.bids));
  if (e.type === "bids_counted") bits.push(`${p.bids} / ${p.signed_in}`);
  return bits;
}

/** One line of the hall log. `name(code)` gives a bidder's display name (staff only). */
export function eventLine(e, name) {
  return logLine(e, textOr(`ev.${e.type}`, e.type), eventBits(e, name));
}

export function renderLog(el, events, name) {
  if (!events.length) {
    el.replaceChildren(h("li", { class: "muted" }, t("log.empty")));
    return;
  }
  el.replaceChildren(...events.slice().reverse().map((e) => eventLine(e, name)));
}

/** The header's connection indicator. */
export function renderConn(el, status, data) {
  el.dataset.state = status;
  if (status === "refused" && data) {
    el.textContent = `${t("conn.refused")}: ${data.code} ${lang === "zh" ? data.zh : data.en}`;
  } else if (status === "reconnecting") {
    el.textContent = t("conn.reconnecting", { n: (data && data.all) || 0 });
  } else {
    el.textContent = t(`conn.${status}`);
  }
}

/**
 * The header's connection indicator and the `fatal` box for a page's model: `onConn` and `onError`
 * go to the model; `relabel()` writes the last state again in the new language.
 */
export function connectionView(fatal) {
  const el = byTestId("conn");
  let conn = ["connecting", null];
  return {
    onConn: (status, data) => {
      conn = [status, data];
      renderConn(el, status, data);
      if (status === "refused") showError(fatal, data);
    },
    onError: (err) => showError(fatal, err),
    relabel: () => renderConn(el, ...conn),
  };
}

/** The header's server clock for a model (a dash until the clock is synced); returns the server's now. */
export function tickClock(model) {
  const now = model.serverNow();
  byTestId("server-time").textContent = model.follower.synced ? fmtTime(now) : "—";
  return now;
}

/** A hall page's ticker: the header's clock and the countdown; returns the server's now. */
export function tickHall(model) {
  const now = tickClock(model);
  tickCountdown(byTestId("countdown"), byTestId("countdown-label"), model.state, now);
  return now;
}

/** This tab's sign-in for the session if its role may open this page; else null, and `fatal` says why. */
export function pageAuth(sessionId, roles, fatal) {
  const auth = loadAuth(sessionId);
  if (!auth) {
    showError(fatal, { code: "NO_SIGN_IN", zh: I18N.zh["err.no_auth"], en: I18N.en["err.no_auth"] });
    return null;
  }
  if (!roles.includes(auth.role)) {
    showError(fatal, { code: "NOT_PERMITTED", zh: I18N.zh["err.wrong_page"], en: I18N.en["err.wrong_page"] });
    return null;
  }
  return auth;
}

/** Boot a hall page: auth from sessionStorage, the model, the language switch, the ticker. */
export function bootHall({ page, roles, render, tick }) {
  const sessionId = new URLSearchParams(location.search).get("session");
  const fatal = byTestId("fatal");
  const auth = pageAuth(sessionId, roles, fatal);
  if (!auth) return null;
  keepTokenFresh(auth, (err) => showError(fatal, err));
  const conn = connectionView(fatal);
  const model = new HallModel({
    sessionId,
    auth,
    onChange: (state) => render(state, model),
    onConn: conn.onConn,
    onError: conn.onError,
  });
  document.addEventListener("langchange", () => {
    conn.relabel();
    if (model.state) render(model.state, model);
  });
  model.start().catch((err) => showError(fatal, err));
  setInterval(() => tick(model), 250);
  document.body.dataset.page = page;
  return model;
}

// --- every page: the header, the shared cards, i18n, the language switch, the enter page's redemption ---

const PAGES = ["bidder", "host", "expert", "supervisor"];

async function enterPage() {
  const status = byTestId("enter-status");
  const error = byTestId("enter-error");
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  // The code leaves the address bar and the history at once: it is a credential.
  history.replaceState(null, "", location.pathname);
  const fail = (err) => {
    status.dataset.i18n = "enter.failed";
    status.textContent = t("enter.failed");
    showError(error, err);
    document.addEventListener("langchange", () => showError(error, err));
    byTestId("enter-back").hidden = false;
  };
  if (!code) {
    fail({ code: "LINK_MISSING", zh: "链接中没有登录码", en: "the link carries no code" });
    return;
  }
  let out;
  try {
    out = await api("POST", "/api/auth/web-link/redeem", { code });
  } catch (err) {
    fail(err);
    return;
  }
  if (!PAGES.includes(out.page)) {
    fail({ code: "PAGE_UNAVAILABLE", zh: `暂无“${out.page}”页面`, en: `there is no ${out.page} page yet` });
    return;
  }
  saveAuth(out);
  location.replace(`/web/${out.page}.html?session=${encodeURIComponent(out.session_id)}`);
}

/**
 * The header bar every page shares, built around the page's own <h1> in <header class="top">:
 * the skip link to #main (not with data-skip="off"), the product's name (data-app, a text key;
 * app.name unless set) over the title, and the language switch. A live page sets data-live to the
 * test id of its slot for the session's facts and gets the server clock and the connection state;
 * below the header, the box for what stops the page (test id "fatal") and, unless data-banner="off",
 * the session's banner (suspended, failed, extended).
 * The settings are removed once read: the header ends up as the pages used to write it out.
 */
function buildTopBar() {
  const top = document.querySelector("header.top");
  if (!top || top.querySelector(".brand")) return;
  const { app = "app.name", live, skip, banner } = top.dataset;
  for (const key of ["app", "live", "skip", "banner"]) delete top.dataset[key];
  if (skip !== "off") top.before(h("a", { class: "skip", href: "#main", "data-i18n": "app.skip" }));
  const brand = h("div", { class: "brand" }, h("span", { class: "app", "data-i18n": app }), top.querySelector("h1"));
  const switcher = h("button", { type: "button", class: "secondary", "data-lang-switch": true, "data-testid": "lang-switch" });
  if (live === undefined) {
    top.replaceChildren(brand, h("div", { class: "top-tools" }, switcher));
    return;
  }
  const clock = h(
    "div",
    { class: "clock" },
    h("span", { class: "label" }, h("span", { "data-i18n": "common.server_time" }), " (", h("span", { "data-i18n": "common.beijing" }), ")"),
    h("span", { class: "mono", "data-testid": "server-time" }, "—"),
  );
  top.replaceChildren(
    brand,
    h("div", { class: "session-meta", "data-testid": live }),
    h("div", { class: "top-tools" }, clock, h("span", { class: "conn", "data-testid": "conn", role: "status" }, "—"), switcher),
  );
  const boxes = [h("div", { class: "alert", role: "alert", "data-testid": "fatal", hidden: true })];
  if (banner !== "off") boxes.push(h("div", { class: "banner", role: "status", "data-testid": "banner", hidden: true }));
  top.after(...boxes);
}

/**
 * The cards several pages share, built into the page's <section data-part="…"> before what the
 * section already holds; data-part-prefix (e.g. "ev-") starts the ids and test ids of a second such
 * card on a page. "status": the heading, the status line and, with data-countdown, the countdown.
 * "log": the heading and the event list, both named by the text key in data-title.
 */
const PARTS = {
  status: ({ prefix, countdown }) => [
    h("h2", { id: `h-${prefix}status`, "data-i18n": "session.status" }),
    h("p", { class: "status-line", "data-testid": `${prefix}status` }, "—"),
    countdown === undefined
      ? null
      : h(
          "div",
          { class: "countdown-box", role: "timer", "aria-live": "off" },
          h("span", { class: "cd-label", "data-testid": `${prefix}countdown-label` }, "—"),
          h("span", { class: "countdown mono", "data-testid": `${prefix}countdown` }, "—"),
        ),
  ],
  log: ({ prefix, title }) => [
    h("h2", { id: `h-${prefix}log`, "data-i18n": title }),
    h("ol", { class: "log", "data-testid": `${prefix}log`, tabindex: "0", "data-i18n-aria": title }),
  ],
};

/** Fill the shared cards (PARTS); as with the header, the settings are removed once read. */
function buildParts() {
  for (const el of document.querySelectorAll("[data-part]")) {
    const { part, partPrefix: prefix = "", countdown, title } = el.dataset;
    for (const key of ["part", "partPrefix", "countdown", "title"]) delete el.dataset[key];
    el.setAttribute("aria-labelledby", `h-${prefix}${part}`);
    el.prepend(...PARTS[part]({ prefix, countdown, title }).filter(Boolean));
  }
}

function init() {
  buildTopBar();
  buildParts();
  applyI18n();
  for (const el of document.querySelectorAll("[data-lang-switch]")) {
    el.addEventListener("click", () => setLang(lang === "zh" ? "en" : "zh"));
  }
  if (document.body.dataset.page === "enter") enterPage();
}

init();
