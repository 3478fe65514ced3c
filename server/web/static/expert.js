// The expert desk (专家评标): the assigned bids with their documents, the review form of the current
// stage with each criterion's maximum, the others' sheets once one's own is in, and the report.
// The browser holds no CA key: "submit" hands the draft to the server (POST .../to-sign), the room
// device's agent (`bidbridge room desk`) signs it with the expert's own key after the expert
// confirms there, and the page learns the outcome from the same events the agents get.
//
// Also exported for the host console's evaluation view: EvalModel (the evaluation as this role may
// see it, refreshed from GET /api/evaluations/{id} whenever the event stream moves), the
// evaluation's state on a page (renderEvalStatus: banner, status line, stepper) and labels.

import {
  I18N,
  FollowedModel,
  addTexts,
  announce,
  api,
  byTestId,
  commandBlock,
  connectionView,
  currentLang,
  fmtFen,
  fmtSize,
  h,
  markBody,
  pageAuth,
  posText,
  renderLog,
  requiredValue,
  showError,
  t,
  tickClock,
  useToken,
} from "/web/app.js";

// --- texts (Chinese first, English second); keys the shared dictionary has already are kept ---------

const TEXT = {
  "expert.app": ["BidBridge 远程异地评标", "BidBridge remote evaluation"],
  "expert.title": ["专家评标（评标专家）", "Expert desk"],
  "ex.stages": ["评标流程", "Evaluation steps"],
  "ex.me": ["专家", "Expert"],
  "ex.lot": ["标段", "Lot"],
  "ex.method": ["评标办法", "Method"],
  "ex.method.comprehensive": ["综合评估法", "comprehensive scoring"],
  "ex.method.lowest_price": ["经评审的最低投标价法", "lowest evaluated price"],
  "ex.chair": ["评标委员会主任", "Chair"],
  "ex.committee": ["评标委员会", "Committee"],
  "ex.committee.n": ["{n}/{m} 人已签到", "{n} of {m} signed in"],
  "ex.none": ["—", "—"],
  "evs.draft": ["草稿", "draft"],
  "evs.drawing": ["抽取专家中", "drawing the committee"],
  "evs.convening": ["专家签到中", "convening (sign-in)"],
  "evs.evaluating": ["评审中", "evaluating"],
  "evs.summarizing": ["汇总中", "summarizing"],
  "evs.signing": ["签署评标报告", "signing the report"],
  "evs.closed": ["评标已结束", "closed"],
  "evs.void": ["评标已作废", "void"],
  "evs.suspended": ["已暂停", "suspended"],
  "stg.drawing": ["抽取", "Draw"],
  "stg.convening": ["签到", "Sign-in"],
  "stg.chair": ["推选主任", "Chair"],
  "stg.qualification": ["资格审查", "Qualification"],
  "stg.preliminary": ["初步评审", "Preliminary review"],
  "stg.detailed": ["详细评审", "Detailed review"],
  "stg.summarizing": ["汇总", "Summary"],
  "stg.signing": ["签署报告", "Report"],
  "stg.closed": ["结束", "Closed"],
  "ex.suspended": ["评标已暂停：{reason}", "The evaluation is suspended: {reason}"],
  "ex.warning": ["监督预警：{text}", "Supervisor's warning: {text}"],
  "ex.chair.title": ["推选评标委员会主任", "Elect the chair"],
  "ex.chair.candidate": ["候选人", "Candidate"],
  "ex.chair.vote": ["投票", "Vote"],
  "ex.chair.voted": ["已投票。", "Vote cast."],
  "ex.bids.title": ["评审的投标文件", "Bids under review"],
  "ex.bids.closed": ["评标开始后可查阅投标文件。", "The bid documents open once the evaluation has started."],
  "ex.bids.price": ["投标报价（元）", "Price (yuan)"],
  "ex.doc.viewer": ["文件查看", "Document viewer"],
  "ex.doc.open": ["查看 {name}", "View {name}"],
  "ex.doc.none": ["选择一个文件在此查看。", "Choose a document to view it here."],
  "ex.doc.loading": ["正在载入 {name}…", "Loading {name}…"],
  "ex.doc.download": ["此类文件不能在页面中显示，请下载查看：{name}", "This kind of file cannot be shown in the page; download it: {name}"],
  "ex.doc.frame": ["投标文件 {name}", "Bid document {name}"],
  "ex.form.title": ["评审表", "Review sheet"],
  "ex.form.submit": ["提交并在评标室终端签名", "Submit and sign at the room device"],
  "ex.form.edit": ["修改后重新提交", "Edit and submit again"],
  "ex.form.none": ["当前没有需要填写的评审表。", "No sheet to fill in now."],
  "ex.form.pass": ["合格", "pass"],
  "ex.form.fail": ["不合格", "fail"],
  "ex.form.verdict": ["{bidder}：{item} 评审结论", "{bidder}: verdict on {item}"],
  "ex.form.reason": ["{bidder}：{item} 不合格理由", "{bidder}: reason {item} fails"],
  "ex.form.points": ["{bidder}：{criterion}（满分 {max}）", "{bidder}: {criterion} (max {max})"],
  "ex.form.max": ["满分 {max}", "max {max}"],
  "ex.form.bidder": ["投标人", "Bidder"],
  "ex.err.missing": ["请为每个投标人的每一项填写评审结论或分数。", "Every bid needs a verdict or a score for every item."],
  "ex.err.reason": ["判为不合格的项须写明理由。", "A fail needs a written reason."],
  "ex.err.points": ["分数须为 0 到满分之间、最多两位小数的数。", "Points must be a number from 0 to the maximum, with at most two decimals."],
  "ex.state.draft": ["填写后提交；签名在评标室终端完成。", "Fill in and submit; the signature is made at the room device."],
  "ex.state.waiting": ["等待评标室终端签名", "Waiting for the signature at the room device"],
  "ex.state.waiting_note": [
    "请在评标室终端核对内容并确认，终端将用您的 CA 证书签名后提交。",
    "Check the content at the room device and confirm there: it signs with your CA key and submits.",
  ],
  "ex.state.submitted": ["已签名提交（第 {round} 轮）", "Signed and submitted (round {round})"],
  "ex.state.rescore": ["主任要求复核：请修改后重新提交。", "The chair called a re-score: revise and submit again."],
  "ex.desk.hint": ["评标室终端运行：", "The room device runs:"],
  "ex.others.title": ["其他成员的评审表", "The other members' sheets"],
  "ex.others.hidden": ["提交本人的评审表后才能查看其他成员的评审表。", "The others' sheets show once your own sheet is in."],
  "ex.others.none": ["其他成员尚未提交。", "No other member has submitted yet."],
  "ex.others.of": ["{who} 的评审表", "{who}'s sheet"],
  "ex.report.title": ["评标报告", "Evaluation report"],
  "ex.report.none": ["评标报告尚未生成。", "The report has not been generated yet."],
  "ex.report.reason": ["不同意或拒签的理由（书面，记入报告）", "Reason to disagree or refuse (written into the report)"],
  "ex.report.agree": ["同意并签名", "Agree and sign"],
  "ex.report.disagree": ["不同意（附理由）并签名", "Disagree (with the reason) and sign"],
  "ex.report.refuse": ["拒绝签名", "Refuse to sign"],
  "ex.report.waiting": ["等待评标室终端签名评标报告", "Waiting for the room device to sign the report"],
  "ex.report.signed": ["您已签署：{what}", "You have signed: {what}"],
  "ex.report.agrees": ["同意", "agree"],
  "ex.report.disagrees": ["不同意：{reason}", "disagree: {reason}"],
  "ex.report.deemed": ["拒签未说明理由，视为同意", "refused without a reason: deemed to agree"],
  "ex.report.signatures": ["已签署 {n}/{m}", "{n} of {m} signed"],
  "ex.report.need_reason": ["不同意或拒签须写明理由（拒签不写理由视为同意）。", "Write the reason (refusing without one counts as agreement)."],
  "ex.log.title": ["评标动态（按发生顺序，#号为公开事件编号）", "Evaluation events (in order; # numbers the public events)"],
  "ex.done": ["已完成：{what}", "Done: {what}"],
  "ex.ev.sheet_to_sign": ["评审表待终端签名", "Sheet waiting for the room device's signature"],
  "ex.ev.report_to_sign": ["报告意见待终端签名", "Report answer waiting for the room device's signature"],
};

for (const type of ["sheet_to_sign", "report_to_sign"]) {
  if (!(`ev.${type}` in I18N.zh)) {
    I18N.zh[`ev.${type}`] = TEXT[`ex.ev.${type}`][0];
    I18N.en[`ev.${type}`] = TEXT[`ex.ev.${type}`][1];
  }
}
addTexts(TEXT); // app.js filled the page before these texts were known

// --- the evaluation as this role may see it --------------------------------------------------------

export function evalPath(sessionId, tail = "") {
  return `/api/evaluations/${encodeURIComponent(sessionId)}${tail}`;
}

/**
 * One page's model of an evaluation: the view (GET /api/evaluations/{id}, as the server's rules
 * let this role see it, read at the viewer's heads `pos`) and the events the hall replays and
 * sends. Whenever an event after the view arrives the view is fetched again (with `extra`, further
 * reads of the same moment), so a page reloaded mid-session shows what one that never left shows.
 */
export class EvalModel extends FollowedModel {
  constructor(options) {
    super(options);
    this.extra = options.extra || (async () => ({}));
    this.data = {};
    this.timer = null;
    this.loading = null;
    this.again = false;
  }

  /** The evaluation as last read (null until the first read). */
  get view() {
    return this.snapshot ? this.snapshot.view : null;
  }

  replayed() {
    this.schedule();
  }

  async refresh() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        const out = await api("GET", evalPath(this.sessionId));
        const data = await this.extra(out.view, this);
        if (this.keepView(out)) this.data = data;
        this.onChange(this);
      } catch (err) {
        this.onError(err);
      } finally {
        this.loading = null;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      }
    })();
    return this.loading;
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 30);
  }

  add(ev) {
    if (this.place(ev) || !this.snapshot) this.schedule();
    else this.onChange(this);
  }

  /** Changes whenever the events or the view's heads do (for the pages' render caches). */
  get mark() {
    return `${this.events.length}:${posText(this.heads())}`;
  }
}

export const EVAL_FLOW = ["drawing", "convening", "chair", "@stages", "summarizing", "signing", "closed"];

/** The evaluation's state on a page: the body's data-status, data-events and data-pos (markBody),
 * the banner, the status line, the stepper. */
export function renderEvalStatus(view, model, statusEl, stagesEl) {
  document.body.dataset.status = view.status;
  markBody(model.events, model.heads());
  renderEvalBanner(byTestId("banner"), view, model.events);
  statusEl.textContent = evalStatusText(view);
  statusEl.dataset.status = view.status;
  statusEl.dataset.stage = view.stage || "";
  renderEvalStages(stagesEl, view);
}

/** The evaluation's steps, with the review stages of this evaluation in the middle. */
export function renderEvalStages(el, view) {
  const steps = EVAL_FLOW.flatMap((s) => (s === "@stages" ? view.stages || [] : [s]));
  const status = view.status === "suspended" ? view.suspended_from : view.status;
  let current = status;
  if (status === "evaluating") current = view.stage || "chair";
  if (status === "draft") current = "drawing";
  const index = steps.indexOf(current);
  el.replaceChildren(
    ...steps.map((step, i) => {
      const state = index < 0 ? "todo" : i < index || (status === "closed" && i === index) ? "done" : i === index ? "current" : "todo";
      return h("li", { class: `stage ${state}`, "aria-current": state === "current" ? "step" : null, "data-stage": step }, t(`stg.${step}`));
    }),
  );
}

export function evalStatusText(view) {
  if (view.status === "suspended") return `${t("evs.suspended")} (${t(`evs.${view.suspended_from}`)})`;
  const base = t(`evs.${view.status}`);
  return view.status === "evaluating" && view.stage ? `${base} · ${t(`stg.${view.stage}`)}` : base;
}

/** The banner: a suspension's reason, else the latest supervisor's warning. */
export function renderEvalBanner(el, view, events) {
  if (view.status === "suspended") {
    const last = [...events].reverse().find((e) => e.type === "evaluation_suspended");
    el.textContent = t("ex.suspended", { reason: last ? last.payload.reason : "" });
    el.className = "banner warn";
    el.hidden = false;
    return;
  }
  const warnings = view.warnings || [];
  if (warnings.length) {
    el.textContent = t("ex.warning", { text: warnings[warnings.length - 1].text });
    el.className = "banner info";
    el.hidden = false;
    return;
  }
  el.hidden = true;
}

export function memberName(view, id) {
  const m = (view.signed_in || []).find((x) => x.id === id);
  return m && m.name ? `${m.name}（${id}）` : id;
}

function bidderName(view, code) {
  const b = (view.bids || []).find((x) => x.bidder === code);
  return b && b.name ? b.name : code;
}

/** Bids still in the running at `stage`: those that passed every earlier stage (as the server). */
function bidsInStage(view, stage) {
  let bids = (view.bids || []).map((b) => b.bidder).sort();
  for (const earlier of view.stages || []) {
    if (earlier === stage) break;
    const passed = new Set(((view.outcomes || {})[earlier] || {}).passed || []);
    bids = bids.filter((b) => passed.has(b));
  }
  return bids;
}

// --- the desk ---------------------------------------------------------------------------------------

const ui = {
  docs: null, // {bidder -> entry}
  docsKey: "",
  shown: null, // {bidder, path}
  editing: null, // the request of a waiting draft being edited
  objectUrl: null,
  formKey: "",
  othersKey: "",
  reportKey: "",
  logKey: "",
  lastStatus: null,
  forms: null,
  auth: null,
};

function sid() {
  return new URLSearchParams(location.search).get("session");
}

/** The method decides (the server says so in the forms): scored stages, criteria, items. */
function scored(forms, stage) {
  return !!forms && forms.scored_stages.includes(stage);
}

function itemsOf(forms, stage) {
  return (forms && forms.items[stage]) || [];
}

/** Hundredths of a point from "12.5" (no floating point: the server counts in hundredths). */
function toX100(text) {
  const m = /^\s*(\d{1,6})(?:\.(\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

function fromX100(v) {
  return `${Math.floor(v / 100)}.${String(v % 100).padStart(2, "0")}`;
}

const REVIEW_STAGES = ["qualification", "preliminary", "detailed"];

async function deskExtra(view, model) {
  const me = model.me.party_id;
  const data = {};
  data.draft = (await api("GET", evalPath(sid(), `/members/${encodeURIComponent(me)}/to-sign`))).draft;
  const stage = REVIEW_STAGES.includes(view.stage) ? view.stage : null;
  if (stage) data.sheets = await api("GET", evalPath(sid(), `/sheets/${stage}`));
  if (view.report_sha256) data.report = await api("GET", evalPath(sid(), "/report"));
  return data;
}

function renderMeta(view, model) {
  const item = (key, value, testid) =>
    h("div", { class: "meta-item" }, h("span", { class: "label" }, t(key)), h("span", { class: "value", "data-testid": testid }, value));
  byTestId("session-meta").replaceChildren(
    h("div", { class: "meta-title", "data-testid": "title" }, view.title || ""),
    h(
      "div",
      { class: "meta-row" },
      item("ex.lot", view.lot_id, "lot"),
      item("ex.method", t(`ex.method.${view.method}`), "method"),
      item("ex.me", model.me.name ? `${model.me.name}（${model.me.party_id}）` : model.me.party_id, "me"),
    ),
  );
}

function renderFacts(view) {
  const rows = [
    ["ex.committee", t("ex.committee.n", { n: (view.signed_in || []).length, m: view.committee_size })],
    ["ex.chair", view.chair ? memberName(view, view.chair) : t("ex.none")],
  ];
  byTestId("facts").replaceChildren(
    ...rows.flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", { "data-testid": `fact-${k.split(".")[1]}` }, v)]),
  );
}

function renderChair(view, model) {
  const card = byTestId("chair-card");
  const open = view.status === "evaluating" && view.stage === "chair";
  card.hidden = !open;
  if (!open) return;
  const select = byTestId("vote-candidate");
  const key = JSON.stringify([(view.signed_in || []).map((m) => m.id), currentLang()]);
  if (select.dataset.key !== key) {
    const chosen = select.value;
    select.replaceChildren(...(view.signed_in || []).map((m) => h("option", { value: m.id }, memberName(view, m.id))));
    if (chosen) select.value = chosen;
    select.dataset.key = key;
  }
  const voted = model.events.some((e) => e.type === "chair_vote" && e.actor === `expert:${model.me.party_id}`);
  byTestId("vote-state").textContent = voted ? t("ex.chair.voted") : "";
}

async function loadDocs(view) {
  const started = ["evaluating", "summarizing", "signing", "closed"].includes(view.status) ||
    (view.status === "suspended" && ["evaluating", "summarizing", "signing"].includes(view.suspended_from));
  if (!started) return null;
  const out = await api("GET", evalPath(sid(), "/bids"));
  return Object.fromEntries(out.bids.map((b) => [b.bidder, b]));
}

function renderBids(view, model) {
  const el = byTestId("bids");
  const key = `${view.status}:${view.suspended_from}:${currentLang()}:${ui.docs ? 1 : 0}`;
  if (key === ui.docsKey) return;
  ui.docsKey = key;
  if (!ui.docs) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "bids-closed" }, t("ex.bids.closed")));
    loadDocs(view)
      .then((docs) => {
        if (docs) {
          ui.docs = docs;
          ui.docsKey = "";
          renderBids(view, model);
        }
      })
      .catch((err) => showError(byTestId("fatal"), err));
    return;
  }
  const rows = Object.values(ui.docs).map((b) =>
    h(
      "li",
      { class: "bid-docs", "data-testid": `bid-${b.bidder}` },
      h("div", { class: "obj-head" }, h("strong", {}, b.name || b.bidder), h("span", { class: "mono muted" }, b.bidder),
        h("span", {}, `${t("ex.bids.price")}: ${fmtFen(b.price_fen)}`)),
      h(
        "ul",
        { class: "plain docs" },
        ...b.documents.map((d, j) =>
          h(
            "li",
            {},
            h(
              "button",
              {
                type: "button",
                class: "link small",
                "data-testid": `doc-${b.bidder}-${j}`,
                "data-path": d.path,
                "aria-label": t("ex.doc.open", { name: `${b.name || b.bidder} ${d.path}` }),
                onclick: () => showDocument(b, d),
              },
              d.path,
            ),
            " ",
            h("span", { class: "muted small" }, fmtSize(d.size)),
          ),
        ),
      ),
    ),
  );
  el.replaceChildren(h("ol", { class: "plain" }, ...rows));
  if (!ui.shown) byTestId("doc-viewer").replaceChildren(h("p", { class: "muted" }, t("ex.doc.none")));
}

/** Fetch a document with the bearer token and show it: PDFs in an object, images, text as text. */
async function showDocument(bid, doc) {
  const viewer = byTestId("doc-viewer");
  const name = `${bid.name || bid.bidder} · ${doc.path}`;
  ui.shown = { bidder: bid.bidder, path: doc.path };
  viewer.dataset.path = doc.path;
  viewer.dataset.bidder = bid.bidder;
  viewer.dataset.state = "loading";
  viewer.replaceChildren(h("p", { class: "muted" }, t("ex.doc.loading", { name })));
  const query = new URLSearchParams({ bidder: bid.bidder, path: doc.path });
  try {
    const response = await fetch(`${evalPath(sid(), "/document")}?${query}`, {
      headers: { Authorization: `Bearer ${ui.auth.token}` },
      cache: "no-store",
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ code: `HTTP_${response.status}`, zh: "请求失败", en: "the request failed" }));
      throw body;
    }
    const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
    const blob = await response.blob();
    if (ui.objectUrl) URL.revokeObjectURL(ui.objectUrl);
    ui.objectUrl = null;
    const title = h("h3", { "data-testid": "doc-title" }, name);
    let body;
    if (type === "text/plain") {
      body = h("pre", { class: "doc-text", tabindex: "0", "data-testid": "doc-text", "aria-label": t("ex.doc.frame", { name }) }, await blob.text());
    } else if (type === "application/pdf" || type.startsWith("image/")) {
      ui.objectUrl = URL.createObjectURL(new Blob([blob], { type }));
      body =
        type === "application/pdf"
          ? h("object", { class: "doc-frame", data: ui.objectUrl, type, "data-testid": "doc-object", "aria-label": t("ex.doc.frame", { name }) },
              h("a", { href: ui.objectUrl, download: doc.path.split("/").pop() }, t("ex.doc.download", { name: doc.path })))
          : h("img", { class: "doc-image", src: ui.objectUrl, alt: t("ex.doc.frame", { name }), "data-testid": "doc-image" });
    } else {
      ui.objectUrl = URL.createObjectURL(blob);
      body = h("a", { href: ui.objectUrl, download: doc.path.split("/").pop(), "data-testid": "doc-download" }, t("ex.doc.download", { name: doc.path }));
    }
    viewer.dataset.type = type;
    viewer.dataset.state = "shown";
    viewer.replaceChildren(title, body);
  } catch (err) {
    viewer.dataset.state = "failed";
    const box = h("div", { class: "alert", role: "alert" });
    viewer.replaceChildren(box);
    showError(box, err);
  }
}

/** The state of this expert's sheet for the current stage: none | draft | waiting | submitted. */
function sheetState(view, data, me) {
  const stage = view.stage;
  if (view.status !== "evaluating" || !REVIEW_STAGES.includes(stage)) return { state: "none" };
  const own = data.sheets && data.sheets.own;
  const submitted = ((view.submitted || {})[stage] || []).includes(me);
  const rescore = own && !submitted;
  if (data.draft && data.draft.kind === "sheet" && data.draft.stage === stage) {
    // Editing a waiting draft: a new submission replaces it (the room device signs the latest).
    if (ui.editing === data.draft.request) return { state: "draft", draft: data.draft, own, editing: true };
    return { state: "waiting", draft: data.draft, own };
  }
  if (submitted && own) return { state: "submitted", own };
  return { state: "draft", rescore, own };
}

function buildForm(view, stage, content) {
  const forms = ui.forms;
  const bids = bidsInStage(view, stage);
  const fields = byTestId("sheet-fields");
  if (scored(forms, stage)) {
    const criteria = forms.criteria;
    const given = new Map(((content && content.scores) || []).map((s) => [`${s.bidder}|${s.criterion}`, s.points_x100]));
    const head = h("tr", {}, h("th", { scope: "col" }, t("ex.form.bidder")),
      ...criteria.map((c) => h("th", { scope: "col" }, `${c.text || c.id}`, h("br"), h("span", { class: "muted small", "data-testid": `max-${c.id}` }, t("ex.form.max", { max: fromX100(c.max_points_x100) })))));
    const rows = bids.map((b) =>
      h("tr", {}, h("th", { scope: "row" }, bidderName(view, b)),
        ...criteria.map((c) => {
          const id = `pts-${b}-${c.id}`;
          const v = given.get(`${b}|${c.id}`);
          return h("td", {}, h("input", {
            id, type: "text", inputmode: "decimal", class: "points", "data-testid": `points-${b}-${c.id}`,
            "data-bidder": b, "data-criterion": c.id, "data-max": String(c.max_points_x100),
            "aria-label": t("ex.form.points", { bidder: bidderName(view, b), criterion: c.text || c.id, max: fromX100(c.max_points_x100) }),
            value: v === undefined ? "" : fromX100(v),
          }));
        })),
    );
    fields.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": t("ex.form.title") },
      h("table", { "data-testid": "score-table" }, h("thead", {}, head), h("tbody", {}, ...rows))));
    return;
  }
  const items = itemsOf(forms, stage);
  const given = new Map(((content && content.verdicts) || []).map((v) => [`${v.bidder}|${v.item}`, v]));
  const rows = [];
  for (const b of bids) {
    for (const item of items) {
      const v = given.get(`${b}|${item.id}`);
      const sel = h("select", {
        "data-testid": `verdict-${b}-${item.id}`, "data-bidder": b, "data-item": item.id, class: "verdict",
        "aria-label": t("ex.form.verdict", { bidder: bidderName(view, b), item: item.text || item.id }),
      },
        h("option", { value: "" }, "—"),
        h("option", { value: "pass" }, t("ex.form.pass")),
        h("option", { value: "fail" }, t("ex.form.fail")));
      sel.value = v ? (v.passed ? "pass" : "fail") : "";
      const reason = h("input", {
        type: "text", maxlength: "2000", "data-testid": `reason-${b}-${item.id}`, class: "reason",
        "aria-label": t("ex.form.reason", { bidder: bidderName(view, b), item: item.text || item.id }), value: v ? v.reason : "",
      });
      rows.push(h("tr", {}, h("th", { scope: "row" }, bidderName(view, b)), h("td", {}, `${item.id} ${item.text || ""}`), h("td", {}, sel), h("td", {}, reason)));
    }
  }
  fields.replaceChildren(h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": t("ex.form.title") },
    h("table", { "data-testid": "review-table" }, h("tbody", {}, ...rows))));
}

/** The sheet the form holds, checked as the server checks it (the server still decides). */
function readForm(view, stage, me) {
  const forms = ui.forms;
  const fields = byTestId("sheet-fields");
  if (scored(forms, stage)) {
    const scores = [];
    for (const input of fields.querySelectorAll("input.points")) {
      const v = toX100(input.value);
      if (input.value.trim() === "") return { error: "ex.err.missing", focus: input };
      if (v === null || v < 0 || v > Number(input.dataset.max)) return { error: "ex.err.points", focus: input };
      scores.push({ bidder: input.dataset.bidder, criterion: input.dataset.criterion, points_x100: v });
    }
    return { content: { expert: me, stage, scores } };
  }
  const verdicts = [];
  for (const sel of fields.querySelectorAll("select.verdict")) {
    const reason = fields.querySelector(`[data-testid="reason-${sel.dataset.bidder}-${sel.dataset.item}"]`);
    if (!sel.value) return { error: "ex.err.missing", focus: sel };
    if (sel.value === "fail" && !reason.value.trim()) return { error: "ex.err.reason", focus: reason };
    verdicts.push({ bidder: sel.dataset.bidder, item: sel.dataset.item, passed: sel.value === "pass", reason: sel.value === "fail" ? reason.value.trim() : "" });
  }
  return { content: { expert: me, stage, verdicts } };
}

function deskCommand(model) {
  return `bidbridge room desk --session ${sid()} --expert-id ${model.me.party_id} --expert-key ... --expert-cert ...`;
}

function renderSheet(view, model) {
  const data = model.data;
  const me = model.me.party_id;
  const s = sheetState(view, data, me);
  const stateEl = byTestId("sheet-state");
  const form = byTestId("sheet-form");
  byTestId("form-stage").textContent = REVIEW_STAGES.includes(view.stage) ? t(`stg.${view.stage}`) : "";
  const key = JSON.stringify([s.state, s.editing, view.stage, s.draft && s.draft.request, s.own && s.own.sha256, currentLang(), (view.outcomes && Object.keys(view.outcomes)) || []]);
  if (key === ui.formKey) return;
  ui.formKey = key;
  stateEl.dataset.state = s.state;
  const fields = byTestId("sheet-fields");
  const hint = byTestId("desk-hint");
  if (s.state === "none" || !ui.forms) {
    form.hidden = true;
    stateEl.replaceChildren(h("p", { class: "muted" }, t("ex.form.none")));
    hint.replaceChildren();
    return;
  }
  form.hidden = false;
  const content = s.draft ? s.draft.content : s.own ? s.own.content : null;
  buildForm(view, view.stage, content);
  const locked = s.state !== "draft";
  for (const el of fields.querySelectorAll("input, select")) el.disabled = locked;
  byTestId("sheet-submit").disabled = locked;
  byTestId("sheet-submit").hidden = s.state === "submitted";
  if (s.state === "waiting") {
    stateEl.replaceChildren(h("p", { class: "waiting", "data-testid": "waiting-room" }, h("strong", {}, t("ex.state.waiting")), " ", t("ex.state.waiting_note")),
      h("p", { class: "muted small" }, "SHA-256 ", h("span", { class: "mono", "data-testid": "draft-sha" }, s.draft.sha256)));
    const edit = h("button", { type: "button", class: "secondary small", "data-testid": "sheet-edit" }, t("ex.form.edit"));
    edit.addEventListener("click", () => {
      ui.editing = s.draft.request;
      ui.formKey = "";
      renderSheet(model.view, model);
    });
    hint.replaceChildren(h("p", { class: "small" }, t("ex.desk.hint")), commandBlock(deskCommand(model), "cmd-desk"), h("div", { class: "row" }, edit));
  } else if (s.state === "submitted") {
    stateEl.replaceChildren(h("p", { class: "ok", "data-testid": "submitted" }, t("ex.state.submitted", { round: s.own.round })),
      h("p", { class: "muted small" }, "SHA-256 ", h("span", { class: "mono", "data-testid": "own-sha" }, s.own.sha256)));
    hint.replaceChildren();
  } else {
    stateEl.replaceChildren(h("p", { class: "muted" }, s.rescore ? t("ex.state.rescore") : t("ex.state.draft")));
    hint.replaceChildren();
  }
}

function renderOthers(view, model) {
  const el = byTestId("others");
  const sheets = model.data.sheets;
  const key = JSON.stringify([view.stage, sheets && sheets.own && sheets.own.sha256, sheets && sheets.others.map((o) => o.sha256), currentLang()]);
  if (key === ui.othersKey) return;
  ui.othersKey = key;
  if (!sheets || !sheets.own) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "others-hidden" }, t("ex.others.hidden")));
    return;
  }
  if (!sheets.others.length) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "others-none" }, t("ex.others.none")));
    return;
  }
  el.replaceChildren(
    ...sheets.others.map((o) => {
      const c = o.content || {};
      const lines = (c.verdicts || []).map((v) => `${bidderName(view, v.bidder)} ${v.item}: ${v.passed ? t("ex.form.pass") : `${t("ex.form.fail")} — ${v.reason}`}`)
        .concat((c.scores || []).map((s) => `${bidderName(view, s.bidder)} ${s.criterion}: ${fromX100(s.points_x100)}`));
      return h("details", { open: true, "data-testid": `other-${o.expert}` },
        h("summary", {}, t("ex.others.of", { who: memberName(view, o.expert) }), " ", h("span", { class: "mono muted small" }, o.sha256.slice(0, 16))),
        h("ul", { class: "plain small" }, ...lines.map((l) => h("li", {}, l))));
    }),
  );
}

function renderReport(view, model) {
  const el = byTestId("report");
  const form = byTestId("report-form");
  const stateEl = byTestId("report-state");
  const me = model.me.party_id;
  const report = model.data.report;
  const draft = model.data.draft && model.data.draft.kind === "report" ? model.data.draft : null;
  const mine = report && report.signatures ? report.signatures[me] : null;
  const key = JSON.stringify([view.report_sha256, draft && draft.request, mine, (view.report_signed || []).length, currentLang()]);
  if (key === ui.reportKey) return;
  ui.reportKey = key;
  if (!report) {
    el.replaceChildren(h("p", { class: "muted", "data-testid": "report-none" }, t("ex.report.none")));
    form.hidden = true;
    stateEl.dataset.state = "none";
    stateEl.replaceChildren();
    return;
  }
  el.replaceChildren(
    h("p", {}, "SHA-256 ", h("span", { class: "mono hash", "data-testid": "report-sha" }, report.sha256)),
    h("p", { "data-testid": "report-signatures" }, t("ex.report.signatures", { n: (view.report_signed || []).length, m: view.committee_size })),
    h("pre", { class: "record", tabindex: "0", "data-testid": "report-text", "aria-label": t("ex.report.title") }, report.text),
  );
  if (mine) {
    const what = mine.deemed ? t("ex.report.deemed") : mine.agree ? t("ex.report.agrees") : t("ex.report.disagrees", { reason: mine.reason });
    stateEl.dataset.state = "signed";
    stateEl.replaceChildren(h("p", { class: "ok", "data-testid": "report-signed" }, t("ex.report.signed", { what })));
    form.hidden = true;
  } else if (draft) {
    stateEl.dataset.state = "waiting";
    stateEl.replaceChildren(h("p", { class: "waiting", "data-testid": "report-waiting" }, h("strong", {}, t("ex.report.waiting")), " ", t("ex.state.waiting_note")),
      commandBlock(deskCommand(model), "cmd-desk-report"));
    form.hidden = true;
  } else {
    stateEl.dataset.state = view.status === "signing" ? "open" : "none";
    stateEl.replaceChildren();
    form.hidden = view.status !== "signing";
  }
}

function render(model) {
  const view = model.view;
  if (!view) return;
  renderMeta(view, model);
  renderEvalStatus(view, model, byTestId("status"), byTestId("stages"));
  renderFacts(view);
  renderChair(view, model);
  renderBids(view, model);
  renderSheet(view, model);
  renderOthers(view, model);
  renderReport(view, model);
  const key = `${model.mark}:${currentLang()}`;
  if (key !== ui.logKey) {
    ui.logKey = key;
    renderLog(byTestId("log"), model.events, (code) => bidderName(view, code));
  }
  const status = `${view.status}:${view.stage}`;
  if (ui.lastStatus !== null && ui.lastStatus !== status) announce(evalStatusText(view));
  ui.lastStatus = status;
}

async function post(tail, body, errorEl, label) {
  showError(errorEl, null);
  try {
    await api("POST", evalPath(sid(), tail), body);
    if (label) announce(t("ex.done", { what: label }));
    return true;
  } catch (err) {
    showError(errorEl, err);
    return false;
  }
}

function bootDesk() {
  const fatal = byTestId("fatal");
  const sessionId = sid();
  const auth = pageAuth(sessionId, ["expert"], fatal);
  if (!auth) return;
  ui.auth = auth;
  useToken(auth.token);
  const conn = connectionView(fatal);
  const model = new EvalModel({
    sessionId,
    auth,
    extra: deskExtra,
    onChange: () => render(model),
    onConn: conn.onConn,
    onError: conn.onError,
  });
  document.addEventListener("langchange", () => {
    conn.relabel();
    ui.docsKey = "";
    render(model);
  });
  api("GET", evalPath(sessionId, "/forms"))
    .then((forms) => {
      ui.forms = forms;
      ui.formKey = "";
      render(model);
    })
    .catch((err) => showError(fatal, err));
  model.start().catch((err) => showError(fatal, err));
  setInterval(() => tickClock(model), 250);

  byTestId("sheet-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const view = model.view;
    const errorEl = byTestId("form-error");
    const read = readForm(view, view.stage, auth.party_id);
    if (read.error) {
      showError(errorEl, { code: "SHEET_INCOMPLETE", zh: I18N.zh[read.error], en: I18N.en[read.error] });
      read.focus.focus();
      return;
    }
    const button = byTestId("sheet-submit");
    button.disabled = true;
    const ok = await post("/to-sign", { kind: "sheet", stage: view.stage, content: read.content }, errorEl, t("ex.form.submit"));
    if (!ok) button.disabled = false;
    model.schedule();
  });
  byTestId("vote-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await post("/vote", { candidate: byTestId("vote-candidate").value }, byTestId("form-error"), t("ex.chair.vote"));
  });
  const reasonEl = byTestId("report-reason");
  const reportError = byTestId("report-error");
  const needReason = () =>
    requiredValue(reasonEl, reportError, { code: "REASON_REQUIRED", zh: I18N.zh["ex.report.need_reason"], en: I18N.en["ex.report.need_reason"] });
  byTestId("report-agree").addEventListener("click", async () => {
    if (await post("/to-sign", { kind: "report", agree: true, reason: "" }, reportError, t("ex.report.agree"))) model.schedule();
  });
  byTestId("report-disagree").addEventListener("click", async () => {
    const reason = needReason();
    if (reason && (await post("/to-sign", { kind: "report", agree: false, reason }, reportError, t("ex.report.disagree")))) model.schedule();
  });
  byTestId("report-refuse").addEventListener("click", async () => {
    const reason = needReason();
    if (reason && (await post("/report/refuse", { reason }, reportError, t("ex.report.refuse")))) model.schedule();
  });
}

if (document.body.dataset.page === "expert") bootDesk();
