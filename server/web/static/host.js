// The host's console (开标控制台): the session's state and timeline from the hall's events; the
// host's actions call the REST routes of server/api/ (sessions.py, decryption.py, record.py).
// Signing the record needs the CA key and stays in the agent; the console shows the command.
//
// The same console follows an evaluation (评标控制台) when the link names one: its timeline and
// state, the committee's sign-in (identities only as the server reveals them: counts until each
// member signs in, 两随机四不知), rooms, review progress, and start / suspend / resume with a
// reason (server/api/evaluations.py). The evaluation model is expert.js's EvalModel.

import {
  I18N,
  ACTIVE,
  BEFORE_DEADLINE,
  addTexts,
  announce,
  api,
  beforeDeadline,
  bootHall,
  byTestId,
  commandBlock,
  connectionView,
  currentLang,
  fmtTime,
  h,
  loadAuth,
  posText,
  pageAuth,
  renderHall,
  renderLog,
  requiredValue,
  showError,
  showNotice,
  t,
  tickClock,
  tickHall,
  useToken,
} from "/web/app.js";
import { EvalModel, evalPath, memberName, renderEvalStatus } from "/web/expert.js";

const ui = {
  objections: new Map(), // id -> {li, sig}
  drafts: new Map(), // id -> reply being typed
  logKey: "",
  record: { sha: null, loading: false, data: null, error: null },
};

function sid() {
  return new URLSearchParams(location.search).get("session");
}

function path(tail) {
  return `/api/sessions/${encodeURIComponent(sid())}${tail}`;
}

function namer(view) {
  const names = new Map();
  for (const b of view.bids || []) names.set(b.bidder, b.bidder_name);
  for (const r of (view.table && view.table.rows) || []) names.set(r.bidder, r.bidder_name);
  return (code) => (names.get(code) ? `${names.get(code)}` : code);
}

function renderTimes(view) {
  const rows = [
    ["session.sign_in_opens", view.timetable.sign_in_opens],
    ["session.deadline", view.timetable.deadline],
  ];
  if (view.decrypt_closes_at) rows.push(["session.decrypt_closes", view.decrypt_closes_at]);
  if (view.confirm_closes_at) rows.push(["session.confirm_closes", view.confirm_closes_at]);
  byTestId("times").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", { class: "mono" }, fmtTime(v))]));
}

/** Which controls are usable now, and why not (rules 6, 11, 13 as the server enforces them). */
function controls(view) {
  const status = view.status;
  const unanswered = (view.objections || []).filter((o) => o.reply === null || o.reply === undefined).length;
  const why = {};
  if (BEFORE_DEADLINE.includes(status)) why.start = t("host.why.start_deadline");
  else if (status !== "sealed") why.start = t("host.why.state");
  else if (!view.supervisors_present) why.start = t("host.why.start_supervisor");
  if (status !== "opening") why.decryption = t("host.why.state");
  if (status !== "announcing") why.confirmation = t("host.why.state");
  else if (unanswered) why.confirmation = t("host.why.objections");
  const extendable = ["published", "sign_in", "decrypting", "confirming"].includes(status) && !(status === "confirming" && view.record_sha256);
  if (!extendable) why.extend = t("host.why.no_window");
  if (!ACTIVE.includes(status)) why.suspend = t("host.why.state");
  if (status !== "suspended") why.resume = t("host.why.state");
  return why;
}

function renderControls(view) {
  const why = controls(view);
  const set = (testid, key, hintId) => {
    const button = byTestId(testid);
    if (!button.dataset.busy) button.disabled = Boolean(why[key]);
    if (hintId) document.getElementById(hintId).textContent = why[key] || "";
  };
  set("start-button", "start", "why-start");
  set("decryption-button", "decryption", "why-decryption");
  set("confirmation-button", "confirmation", "why-confirmation");
  set("extend-button", "extend");
  set("suspend-button", "suspend");
  set("resume-button", "resume");
  const windowWhy = [why.extend && `${t("host.extend")}: ${why.extend}`].filter(Boolean);
  byTestId("why-window").textContent = windowWhy.join(" ");
  byTestId("extend-minutes").disabled = Boolean(why.extend);
}

function renderPresence(view) {
  const roles = Object.values(view.present || {});
  const hosts = roles.filter((r) => r === "host").length;
  const sups = view.supervisors_present || 0;
  const items = [
    h("li", { "data-testid": "hosts-present" }, t("host.staff_present", { n: hosts })),
    h("li", { "data-testid": "supervisors-present", class: sups ? "ok" : "warn" }, t("host.supervisors", { n: sups })),
  ];
  if (!sups && ["sealed", "published", "sign_in"].includes(view.status)) {
    items.push(h("li", { class: "warn", "data-testid": "no-supervisor" }, t("host.no_supervisor")));
  }
  if (beforeDeadline(view)) {
    items.push(h("li", { class: "muted", "data-testid": "bidders-hidden" }, t("host.bidders_hidden")));
  } else {
    const count = Array.isArray(view.bids) ? view.bids.length : null;
    if (typeof view.signed_in_count === "number") {
      items.push(h("li", { "data-testid": "signed-in-count" }, t("host.signed_in_count", { n: view.signed_in_count })));
    }
    if (count !== null) items.push(h("li", { "data-testid": "bid-count" }, t("host.bid_count", { n: count })));
  }
  byTestId("presence").replaceChildren(h("ul", { class: "plain" }, ...items));
}

function renderBids(view) {
  const el = byTestId("bids");
  if (!Array.isArray(view.bids)) {
    el.replaceChildren(h("p", { class: "muted" }, beforeDeadline(view) ? t("host.bidders_hidden") : t("host.bids.none")));
  } else {
    const rows = view.bids.map((b, i) =>
      h(
        "tr",
        { "data-bidder": b.bidder, "data-testid": `bid-${b.bidder}` },
        h("td", {}, String(i + 1)),
        h("th", { scope: "row" }, b.bidder_name || b.bidder),
        h("td", { class: "mono" }, b.bidder),
        h("td", {}, h("span", { class: `badge bid-${b.status}`, "data-testid": `bid-status-${b.bidder}`, "data-status": b.status }, t(`bid.${b.status}`))),
        h("td", { class: "num" }, String(b.attempts)),
        h("td", {}, b.confirmation ? t(`conf.${b.confirmation}`) : t("common.dash")),
      ),
    );
    el.replaceChildren(
      h(
        "div",
        { class: "table-wrap", tabindex: "0", role: "region", "aria-label": t("host.bids") },
        h(
          "table",
          { "data-testid": "bids-table" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...["table.no", "table.bidder", "table.code", "table.status", "host.bids.attempts", "table.confirmation"].map((k) => h("th", { scope: "col" }, t(k))),
            ),
          ),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }
  const incidents = view.incidents || [];
  const name = namer(view);
  byTestId("incidents").replaceChildren(
    ...(incidents.length
      ? [
          h("h3", {}, t("host.incidents")),
          h("ul", { class: "plain" }, ...incidents.map((i) => h("li", {}, fmtTime(i.at), " ", i.reason, " — ", i.bidders.map(name).join("、")))),
        ]
      : []),
  );
}

function buildObjection(o, name, model) {
  const answered = o.reply !== null && o.reply !== undefined;
  const li = h(
    "li",
    { "data-id": String(o.id), "data-testid": `objection-${o.id}` },
    h(
      "div",
      { class: "obj-head" },
      h("strong", {}, t("obj.from", { id: o.id, who: name(o.bidder) })),
      h("time", { class: "muted" }, fmtTime(o.at)),
      h("span", { class: "tag" }, o.public ? t("obj.public") : t("obj.private")),
    ),
    h("p", { class: "obj-text", "data-testid": `objection-text-${o.id}` }, o.text),
  );
  if (answered) {
    li.append(
      h(
        "div",
        { class: "reply", "data-testid": `objection-reply-${o.id}` },
        h("div", { class: "obj-head" }, h("strong", {}, t("obj.reply")), h("time", { class: "muted" }, fmtTime(o.replied_at))),
        h("p", {}, o.reply),
      ),
    );
    return li;
  }
  const fieldId = `reply-${o.id}`;
  const area = h("textarea", { id: fieldId, rows: "2", maxlength: "2000", "data-testid": `reply-text-${o.id}` });
  area.value = ui.drafts.get(o.id) || "";
  area.addEventListener("input", () => ui.drafts.set(o.id, area.value));
  const alsoId = `reply-also-${o.id}`;
  const also = h("input", { id: alsoId, inputmode: "numeric", autocomplete: "off", "data-testid": `reply-also-${o.id}` });
  const error = h("div", { class: "alert", role: "alert", hidden: true });
  const send = h("button", { type: "submit", "data-testid": `reply-send-${o.id}` }, t("obj.reply_send"));
  const form = h(
    "form",
    { class: "stack reply-form", novalidate: true },
    h("label", { for: fieldId }, t("obj.reply_label", { id: o.id })),
    area,
    h("label", { for: alsoId }, t("obj.also_label")),
    also,
    h("div", { class: "row" }, send),
    error,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError(error, null);
    const text = area.value.trim();
    if (!text) {
      showError(error, { code: "TEXT_REQUIRED", zh: "请填写答复内容。", en: "Write the reply first." });
      area.focus();
      return;
    }
    const others = also.value.split(/[\s,，、#]+/).filter(Boolean);
    if (others.some((n) => !/^[0-9]{1,9}$/.test(n))) {
      showError(error, { code: "INVALID_INPUT", zh: "请填写异议编号（数字），用逗号分隔。", en: "Give objection numbers, separated by commas." });
      also.focus();
      return;
    }
    send.disabled = true;
    try {
      await api("POST", path(`/objections/${o.id}/reply`), { text, also: others.map(Number) });
      ui.drafts.delete(o.id);
    } catch (err) {
      showError(error, err);
      send.disabled = false;
    }
  });
  li.append(h("p", { class: "muted awaiting" }, t("obj.awaiting")), form);
  return li;
}

function renderObjections(view, model) {
  const list = byTestId("objections");
  const objections = view.objections || [];
  const name = namer(view);
  const pending = objections.filter((o) => o.reply === null || o.reply === undefined).length;
  byTestId("objections-pending").textContent = pending ? t("obj.unanswered", { n: pending }) : "";
  if (!objections.length) {
    ui.objections.clear();
    list.replaceChildren(h("li", { class: "muted" }, t("obj.none")));
    return;
  }
  for (const child of [...list.children]) if (!child.dataset.id) child.remove();
  for (const o of objections) {
    const sig = JSON.stringify([o.reply, o.replied_at, o.public, name(o.bidder), currentLang()]);
    const known = ui.objections.get(o.id);
    if (known && known.sig === sig) continue;
    const li = buildObjection(o, name, model);
    if (known) known.li.replaceWith(li);
    else list.append(li);
    ui.objections.set(o.id, { li, sig });
  }
}

async function loadRecord(sha) {
  ui.record = { sha, loading: true, data: null, error: null };
  try {
    ui.record.data = await api("GET", path("/record"));
  } catch (err) {
    ui.record.error = err;
  }
  ui.record.loading = false;
}

function renderRecord(view, model) {
  const el = byTestId("record");
  const sha = view.record_sha256;
  if (!sha) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "record-none" }, t("host.record.none")));
    return;
  }
  if (ui.record.sha !== sha) {
    loadRecord(sha).then(() => model.state && renderRecord(model.state.view, model));
  }
  const signed = (view.record_signatures || []).map((r) => t(`role.${r}`));
  const parts = [
    h("p", {}, `${t("host.record.sha")}: `, h("span", { class: "mono hash", "data-testid": "record-sha" }, sha)),
    h("p", { "data-testid": "record-signed" }, t("host.record.signed", { roles: [t("role.server"), ...signed].join("、") })),
  ];
  if (!(view.record_signatures || []).includes("host")) {
    parts.push(h("p", { class: "small" }, t("host.record.sign")), commandBlock(`bidbridge host sign-record --session ${sid()}`, "cmd-sign-record"));
  }
  const error = h("div", { class: "alert", role: "alert", hidden: true });
  if (ui.record.error) showError(error, ui.record.error);
  parts.push(error);
  if (ui.record.data) {
    parts.push(
      h("pre", { class: "record", tabindex: "0", "data-testid": "record-text", "aria-label": t("host.record") }, ui.record.data.text),
    );
  } else if (ui.record.loading) {
    parts.push(h("p", { class: "muted" }, t("common.loading")));
  }
  el.replaceChildren(...parts);
}

function render(state, model) {
  const { view, facts } = state;
  renderHall(state, model, { meKey: "host.me", meText: model.me.name });
  renderTimes(view);
  renderControls(view);
  renderPresence(view);
  renderBids(view);
  renderObjections(view, model);
  renderRecord(view, model);
  const key = `${state.events.length}:${posText(facts.pos)}:${currentLang()}:${(view.bids || []).length}:${view.table ? 1 : 0}`;
  if (key !== ui.logKey) {
    ui.logKey = key;
    renderLog(byTestId("log"), state.events, namer(view));
  }
  tickHall(model);
}

const evaluation = await probeEvaluation();
const model = evaluation ? null : bootHall({ page: "host", roles: ["host", "centre"], render, tick: tickHall });

/**
 * POST one action from its button: the button is busy meanwhile, the outcome shows in the
 * `errorId` / `okId` boxes and is announced (`done()` is the text), `settle()` re-enables controls.
 */
async function postAction(button, { url, body, errorId, okId, done, settle }) {
  const error = byTestId(errorId);
  const ok = byTestId(okId);
  showError(error, null);
  showNotice(ok, "");
  button.dataset.busy = "1";
  button.disabled = true;
  try {
    await api("POST", url(), body);
    showNotice(ok, done());
    announce(done());
    return true;
  } catch (err) {
    showError(error, err);
    return false;
  } finally {
    delete button.dataset.busy;
    settle();
  }
}

function act(button, tail, body, label) {
  return postAction(button, {
    url: () => path(tail),
    body,
    errorId: "host-error",
    okId: "host-ok",
    done: () => t("host.done", { what: label }),
    settle: () => {
      if (model && model.state) renderControls(model.state.view);
      else button.disabled = false;
    },
  });
}

function reasonOrComplain() {
  return requiredValue(byTestId("action-reason"), byTestId("host-error"), {
    code: "REASON_REQUIRED",
    zh: "请填写原因。",
    en: "A reason is required.",
  });
}

if (model) {
  byTestId("start-button").addEventListener("click", (ev) => act(ev.currentTarget, "/start", undefined, t("host.start")));
  byTestId("decryption-button").addEventListener("click", (ev) => act(ev.currentTarget, "/decryption", undefined, t("host.decryption")));
  byTestId("confirmation-button").addEventListener("click", (ev) =>
    act(ev.currentTarget, "/confirmation", undefined, t("host.confirmation")),
  );
  byTestId("extend-button").addEventListener("click", async (ev) => {
    const reason = reasonOrComplain();
    if (!reason) return;
    const minutes = Number.parseInt(byTestId("extend-minutes").value, 10);
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 10080) {
      showError(byTestId("host-error"), { code: "MINUTES_INVALID", zh: "延长分钟数须为 1–10080 的整数。", en: "Minutes must be a whole number from 1 to 10080." });
      byTestId("extend-minutes").focus();
      return;
    }
    if (await act(ev.currentTarget, "/extend", { minutes, reason }, t("host.extend"))) byTestId("action-reason").value = "";
  });
  for (const [testid, tail, key] of [
    ["suspend-button", "/suspend", "host.suspend"],
    ["resume-button", "/resume", "host.resume"],
  ]) {
    byTestId(testid).addEventListener("click", async (ev) => {
      const reason = reasonOrComplain();
      if (!reason) return;
      if (await act(ev.currentTarget, tail, { reason }, t(key))) byTestId("action-reason").value = "";
    });
  }
  byTestId("window-form").addEventListener("submit", (ev) => ev.preventDefault());
}

// --- the evaluation view ------------------------------------------------------------------------------

const EV_TEXT = {
  "hev.title": ["评标控制台（主持人）", "Evaluation console (host)"],
  "hev.controls": ["评标操作", "Evaluation controls"],
  "hev.start": ["开始评标", "Start the evaluation"],
  "hev.reason": ["原因（记入评标记录，通知监督和各评标室）", "Reason (recorded; the supervisor and every room are told)"],
  "hev.suspend": ["暂停评标", "Suspend"],
  "hev.resume": ["恢复评标", "Resume"],
  "hev.committee": ["评标委员会与在线情况", "Committee and presence"],
  "hev.rooms": ["评标室", "Rooms"],
  "hev.progress": ["评审进度", "Review progress"],
  "hev.why.state": ["当前状态不能执行此操作。", "Not possible in the current state."],
  "hev.why.supervisor": ["须有监督人员在线才能开始评标。", "A supervisor must be present to start."],
  "hev.why.signed_in": ["全部成员签到后才能开始评标。", "Every member must sign in first."],
  "hev.signed_in": ["已签到成员：{n}/{m}", "Members signed in: {n}/{m}"],
  "hev.identities": ["抽取结果对主持人保密，成员签到后才显示身份（两随机四不知）。", "The draw stays hidden from the host; members show once signed in."],
  "hev.late": ["迟到", "late"],
  "hev.supervisors": ["监督在线：{n}", "Supervisors present: {n}"],
  "hev.rooms_count": ["抽中评标室：{n}，音视频在线：{up}", "Rooms drawn: {n}, linked: {up}"],
  "hev.room_members": ["{room}：已签到 {n} 人", "{room}: {n} signed in"],
  "hev.segments": ["录像分段：{n}", "Recording segments: {n}"],
  "hev.convene": ["集合时间", "Convene at"],
  "hev.grace": ["签到宽限（分钟）", "Sign-in grace (minutes)"],
  "hev.suspended_at": ["暂停于", "Suspended at"],
  "hev.submitted": ["{stage}：已提交 {n}/{m}", "{stage}: {n}/{m} sheets in"],
  "hev.passed": ["通过：{who}", "passed: {who}"],
  "hev.report_signed": ["评标报告签署：{n}/{m}", "Report signed: {n}/{m}"],
  "hev.chair": ["评标委员会主任：{who}", "Chair: {who}"],
  "hev.ranking": ["推荐中标候选人：{who}", "Recommended: {who}"],
  "hev.done": ["已完成：{what}", "Done: {what}"],
  "hev.need_reason": ["请填写原因。", "A reason is required."],
};
addTexts(EV_TEXT);

/** The link names an evaluation when the evaluation route knows the session. */
async function probeEvaluation() {
  const auth = loadAuth(sid());
  if (!auth) return false;
  useToken(auth.token);
  try {
    await api("GET", evalPath(sid()));
    return true;
  } catch {
    return false; // NOT_FOUND: an opening (bootHall reports anything else)
  }
}

const ev = { model: null, logKey: "" };

function evControls(view) {
  const why = {};
  const missing = view.committee_size - (view.signed_in || []).length;
  if (view.status !== "convening") why.start = t("hev.why.state");
  else if (!view.supervisors_present) why.start = t("hev.why.supervisor");
  else if (missing > 0) why.start = t("hev.why.signed_in");
  if (!["drawing", "convening", "evaluating", "summarizing", "signing"].includes(view.status)) why.suspend = t("hev.why.state");
  if (view.status !== "suspended") why.resume = t("hev.why.state");
  return why;
}

function renderEvControls(view) {
  const why = evControls(view);
  for (const [testid, key] of [["ev-start", "start"], ["ev-suspend", "suspend"], ["ev-resume", "resume"]]) {
    const button = byTestId(testid);
    if (!button.dataset.busy) button.disabled = Boolean(why[key]);
  }
  byTestId("ev-why-start").textContent = why.start || "";
}

function renderEvTimes(view) {
  const rows = [
    ["hev.convene", fmtTime(view.timetable.convene_at)],
    ["hev.grace", String(view.timetable.grace_minutes)],
  ];
  if (view.suspended_at) rows.push(["hev.suspended_at", fmtTime(view.suspended_at)]);
  byTestId("ev-times").replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", { class: "mono" }, v)]));
}

function renderEvCommittee(view) {
  const signed = view.signed_in || [];
  const sups = view.supervisors_present || 0;
  const items = [
    h("li", { "data-testid": "ev-signed-in" }, t("hev.signed_in", { n: signed.length, m: view.committee_size })),
    h("li", { "data-testid": "ev-supervisors", class: sups ? "ok" : "warn" }, t("hev.supervisors", { n: sups })),
  ];
  if (view.chair) items.push(h("li", { "data-testid": "ev-chair" }, t("hev.chair", { who: memberName(view, view.chair) })));
  if (signed.length < view.committee_size) items.push(h("li", { class: "muted" }, t("hev.identities")));
  byTestId("ev-committee").replaceChildren(
    h("ul", { class: "plain" }, ...items),
    h(
      "ul",
      { class: "plain", "data-testid": "ev-members" },
      ...signed.map((m) =>
        h("li", { "data-member": m.id }, memberName(view, m.id), " ", h("span", { class: "muted small" }, m.room_id), m.late ? h("span", { class: "tag" }, t("hev.late")) : null),
      ),
    ),
  );
}

function renderEvRooms(view) {
  const perRoom = new Map();
  for (const m of view.signed_in || []) perRoom.set(m.room_id, (perRoom.get(m.room_id) || 0) + 1);
  byTestId("ev-rooms").replaceChildren(
    h("p", { "data-testid": "ev-rooms-count" }, t("hev.rooms_count", { n: view.rooms_drawn, up: view.rooms_up })),
    h("ul", { class: "plain" }, ...[...perRoom].sort().map(([room, n]) => h("li", { "data-room": room }, t("hev.room_members", { room, n })))),
    h("p", { class: "muted small" }, t("hev.segments", { n: view.segments })),
  );
}

function renderEvProgress(view) {
  const items = [];
  for (const stage of view.stages || []) {
    const n = ((view.submitted || {})[stage] || []).length;
    const outcome = (view.outcomes || {})[stage];
    items.push(
      h(
        "li",
        { "data-stage": stage },
        t("hev.submitted", { stage: t(`stg.${stage}`), n, m: view.committee_size }),
        outcome && outcome.passed ? h("span", { class: "muted small" }, " · ", t("hev.passed", { who: outcome.passed.map((b) => bidderOf(view, b)).join("、") })) : null,
      ),
    );
  }
  const ranking = view.ranking && view.ranking.ranking;
  if (ranking && ranking.recommended) items.push(h("li", { "data-testid": "ev-recommended" }, t("hev.ranking", { who: ranking.recommended.map((b) => bidderOf(view, b)).join("、") })));
  if (view.report_sha256) {
    items.push(h("li", { "data-testid": "ev-report-signed" }, t("hev.report_signed", { n: (view.report_signed || []).length, m: view.committee_size })));
  }
  byTestId("ev-progress").replaceChildren(h("ul", { class: "plain" }, ...items));
}

function bidderOf(view, code) {
  const b = (view.bids || []).find((x) => x.bidder === code);
  return b && b.name ? b.name : code;
}

function renderEvaluation(model) {
  const view = model.view;
  if (!view) return;
  byTestId("session-meta").replaceChildren(
    h("div", { class: "meta-title", "data-testid": "title" }, view.title || ""),
    h("div", { class: "meta-row" }, h("div", { class: "meta-item" }, h("span", { class: "label" }, t("session.lot")), h("span", { class: "value" }, view.lot_id))),
  );
  renderEvalStatus(view, model, byTestId("ev-status"), byTestId("ev-stages"));
  renderEvTimes(view);
  renderEvControls(view);
  renderEvCommittee(view);
  renderEvRooms(view);
  renderEvProgress(view);
  const key = `${model.mark}:${currentLang()}`;
  if (key !== ev.logKey) {
    ev.logKey = key;
    renderLog(byTestId("ev-log"), model.events, (code) => bidderOf(view, code));
  }
}

function evAct(button, tail, body, label) {
  return postAction(button, {
    url: () => evalPath(sid(), tail),
    body,
    errorId: "ev-error",
    okId: "ev-ok",
    done: () => t("hev.done", { what: label }),
    settle: () => {
      if (ev.model && ev.model.view) renderEvControls(ev.model.view);
    },
  });
}

function bootEvaluation() {
  const fatal = byTestId("fatal");
  const auth = pageAuth(sid(), ["host", "centre"], fatal);
  if (!auth) return;
  const opening = document.getElementById("main");
  opening.hidden = true;
  opening.id = "main-opening";
  const main = byTestId("ev-main");
  main.hidden = false;
  main.id = "main";
  const brand = document.querySelector(".brand .app");
  if (brand) {
    brand.dataset.i18n = "expert.app";
    brand.textContent = t("expert.app");
  }
  const title = byTestId("page-title");
  title.dataset.i18n = "hev.title";
  document.body.dataset.titleKey = "hev.title";
  title.textContent = t("hev.title");
  document.title = `${t("hev.title")} · BidBridge`;
  document.body.dataset.page = "host";
  document.body.dataset.kind = "evaluation";
  const conn = connectionView(fatal);
  const model = new EvalModel({
    sessionId: sid(),
    auth,
    onChange: () => renderEvaluation(model),
    onConn: conn.onConn,
    onError: conn.onError,
  });
  ev.model = model;
  document.addEventListener("langchange", () => {
    conn.relabel();
    ev.logKey = "";
    renderEvaluation(model);
  });
  model.start().catch((err) => showError(fatal, err));
  setInterval(() => tickClock(model), 250);
  byTestId("ev-start").addEventListener("click", (e) => evAct(e.currentTarget, "/start", undefined, t("hev.start")));
  for (const [testid, tail, key] of [
    ["ev-suspend", "/suspend", "hev.suspend"],
    ["ev-resume", "/resume", "hev.resume"],
  ]) {
    byTestId(testid).addEventListener("click", async (e) => {
      const input = byTestId("ev-reason");
      const reason = requiredValue(input, byTestId("ev-error"), { code: "REASON_REQUIRED", zh: I18N.zh["hev.need_reason"], en: I18N.en["hev.need_reason"] });
      if (!reason) return;
      if (await evAct(e.currentTarget, tail, { reason }, t(key))) input.value = "";
    });
  }
  byTestId("ev-form").addEventListener("submit", (e) => e.preventDefault());
}

if (evaluation) bootEvaluation();
