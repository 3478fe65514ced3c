// The bidder's hall page (开标大厅): everything shown is folded from the hall's events.
// The browser holds no CA key: decryption and confirmation happen in the bidder agent, and the
// page says so with the exact command instead of pretending.

import {
  OBJECTIONS_OPEN,
  announce,
  api,
  beforeDeadline,
  bootHall,
  byTestId,
  commandBlock,
  currentLang,
  effectiveStatus,
  fmtFen,
  fmtSize,
  fmtTime,
  h,
  renderHall,
  renderLog,
  requiredValue,
  showError,
  showNotice,
  splitBilingual,
  t,
  tickHall,
} from "/web/app.js";

const ui = {
  confirmOpen: false,
  lastBidStatus: null,
};

function cmd(sub, extra = "") {
  const sid = new URLSearchParams(location.search).get("session");
  return `bidbridge bidder ${sub} --session ${sid}${extra}`;
}

function bilingualMessage(text) {
  const { zh, en } = splitBilingual(text);
  const first = currentLang() === "zh" ? zh : en;
  const second = currentLang() === "zh" ? en : zh;
  return h("span", {}, first, second && second !== first ? h("span", { class: "muted" }, ` / ${second}`) : null);
}

function renderTimes(view, facts) {
  const rows = [
    ["session.sign_in_opens", view.timetable.sign_in_opens],
    ["session.deadline", view.timetable.deadline],
  ];
  if (view.decrypt_closes_at) rows.push(["session.decrypt_closes", view.decrypt_closes_at]);
  if (view.confirm_closes_at) rows.push(["session.confirm_closes", view.confirm_closes_at]);
  const dl = byTestId("times");
  dl.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, t(k)), h("dd", { class: "mono" }, fmtTime(v))]));
  if (facts.bidsOpened !== null && !beforeDeadline(view)) {
    dl.append(h("dt", {}, t("session.bids_opened")), h("dd", { "data-testid": "bids-opened" }, String(facts.bidsOpened)));
  }
}

function renderOwnBid(view) {
  const bid = view.own_bid;
  const el = byTestId("own-bid");
  if (!bid) {
    const key = beforeDeadline(view) ? "bidder.no_bid" : "bidder.no_bid_after";
    el.replaceChildren(
      h("p", { "data-testid": "no-bid" }, t(key)),
      beforeDeadline(view) ? h("p", { class: "small" }, t("bidder.upload_cmd")) : null,
      beforeDeadline(view) ? commandBlock(cmd("upload", " FILE.p7m"), "cmd-upload") : null,
    );
    return;
  }
  const row = (key, value, cls = "") => [h("dt", {}, t(key)), h("dd", { class: cls }, value)];
  el.replaceChildren(
    h(
      "dl",
      { class: "facts", "data-testid": "receipt" },
      ...row("receipt.status", h("span", { class: `badge bid-${bid.status}`, "data-testid": "own-status" }, t(`bid.${bid.status}`))),
      ...row("receipt.id", bid.receipt_id, "mono"),
      ...row("receipt.received_at", fmtTime(bid.received_at), "mono"),
      ...row("receipt.size", fmtSize(bid.size)),
      ...row("receipt.sha256", bid.envelope_sha256, "mono hash"),
    ),
    h("p", { class: "small muted" }, t("receipt.verify")),
    commandBlock(cmd("receipt"), "cmd-receipt"),
  );
}

function renderSignIn(view) {
  const status = byTestId("signin-status");
  const button = byTestId("signin-button");
  status.textContent = view.signed_in ? t("signin.done") : t("signin.not");
  status.className = view.signed_in ? "badge ok" : "badge";
  const open = ["sign_in", "sealed", "opening", "decrypting"].includes(view.status);
  button.hidden = Boolean(view.signed_in);
  button.disabled = !open;
  button.title = open ? "" : t("signin.closed");
}

function renderRehearsal(view, facts) {
  const el = byTestId("rehearsal");
  const bid = view.own_bid;
  if (!bid) {
    el.replaceChildren(h("p", { class: "muted" }, t("common.dash")));
    return;
  }
  const open = beforeDeadline(view);
  if (bid.rehearsal === "passed") {
    el.replaceChildren(h("p", { class: "ok", "data-testid": "rehearsal-state", "data-state": "passed" }, t("rehearsal.passed")));
  } else if (bid.rehearsal === "failed") {
    const r = facts.rehearsal || {};
    el.replaceChildren(
      h(
        "div",
        { class: "problem", "data-testid": "rehearsal-state", "data-state": "failed" },
        h("p", {}, h("strong", {}, t("rehearsal.failed")), r.code ? h("span", { class: "code" }, ` ${r.code}`) : null),
        r.message ? h("p", {}, bilingualMessage(r.message)) : null,
        open ? h("p", { class: "next" }, t("rehearsal.next_failed")) : null,
        open ? commandBlock(cmd("rehearse"), "cmd-rehearse") : null,
      ),
    );
  } else {
    el.replaceChildren(
      h("p", { "data-testid": "rehearsal-state", "data-state": "none" }, t("rehearsal.none")),
      open ? h("p", { class: "small" }, t("rehearsal.next_none")) : null,
      open ? commandBlock(cmd("rehearse"), "cmd-rehearse") : null,
    );
  }
}

function renderDecryption(view, facts) {
  const el = byTestId("decryption");
  const bid = view.own_bid;
  const status = effectiveStatus(view);
  const box = (state, ...children) => h("div", { "data-testid": "decrypt-state", "data-state": state }, ...children);
  const incidents = facts.incidents.map((i) => h("p", { class: "small warn" }, t("decrypt.incident", { reason: i.reason })));
  if (beforeDeadline(view)) {
    el.replaceChildren(box("waiting", h("p", {}, t(bid ? "decrypt.wait_deadline" : "bidder.no_bid"))));
    return;
  }
  if (!bid) {
    el.replaceChildren(box("none", h("p", {}, t("bidder.no_bid_after"))));
    return;
  }
  const until = view.decrypt_closes_at ? t("decrypt.until", { at: fmtTime(view.decrypt_closes_at) }) : "";
  switch (bid.status) {
    case "retracted":
      el.replaceChildren(box("retracted", h("p", {}, t("decrypt.retracted"))));
      return;
    case "decrypted": {
      const s = bid.summary || {};
      el.replaceChildren(
        box(
          "decrypted",
          h("p", { class: "ok big" }, t("decrypt.ok")),
          h("h3", {}, t("decrypt.summary")),
          h(
            "dl",
            { class: "facts" },
            h("dt", {}, t("table.price")),
            h("dd", { class: "mono", "data-testid": "own-price" }, fmtFen(s.price_fen)),
            h("dt", {}, t("table.duration")),
            h("dd", {}, s.duration_days ?? "—"),
            h("dt", {}, t("table.quality")),
            h("dd", {}, s.quality ?? "—"),
            h("dt", {}, t("table.pm")),
            h("dd", {}, s.project_manager ?? "—"),
          ),
          ...incidents,
        ),
      );
      return;
    }
    case "revoked": {
      const finding = facts.evidence && facts.evidence.finding ? t(`finding.${facts.evidence.finding}`) : "—";
      el.replaceChildren(box("revoked", h("p", { class: "bad" }, t("decrypt.revoked", { finding })), ...incidents));
      return;
    }
    case "withdrawn":
      el.replaceChildren(box("withdrawn", h("p", { class: "warn" }, t("decrypt.withdrawn")), ...incidents));
      return;
    case "failed": {
      const last = [...bid.attempts].reverse().find((a) => !a.ok) || {};
      const open = status === "decrypting";
      el.replaceChildren(
        box(
          "failed",
          h(
            "div",
            { class: "problem" },
            h("p", {}, h("strong", {}, t("decrypt.failed")), " ", h("span", { class: "code", "data-testid": "decrypt-code" }, last.code || ""), " ", h("time", { class: "muted" }, fmtTime(last.at))),
            h("p", { "data-testid": "decrypt-message" }, bilingualMessage(last.message || "")),
            h("p", { class: "small" }, t(`decrypt.cause.${last.cause === "platform" ? "platform" : "bidder"}`)),
            open ? h("p", { class: "next", "data-testid": "decrypt-next" }, t(last.cause === "platform" ? "decrypt.next_platform" : "decrypt.next_bidder"), " ", until) : null,
            open ? commandBlock(cmd("decrypt"), "cmd-decrypt") : null,
          ),
          ...incidents,
        ),
      );
      return;
    }
    default:
      if (status === "decrypting") {
        el.replaceChildren(
          box("open", h("p", { class: "next" }, t("decrypt.open")), commandBlock(cmd("decrypt"), "cmd-decrypt"), h("p", { class: "small" }, until), ...incidents),
        );
      } else {
        el.replaceChildren(box("waiting", h("p", {}, t("decrypt.wait_open")), ...incidents));
      }
  }
}

function renderConfirm(view, facts) {
  const el = byTestId("confirm");
  const bid = view.own_bid;
  const status = effectiveStatus(view);
  const wrap = (state, ...children) => h("div", { "data-testid": "confirm-state", "data-state": state }, ...children);
  if (!view.table) {
    el.replaceChildren(wrap("waiting", h("p", { class: "muted" }, t("table.none"))));
    return;
  }
  if (!bid || bid.status !== "decrypted") {
    el.replaceChildren(wrap("na", h("p", { class: "muted" }, t("confirm.na"))));
    return;
  }
  if (bid.confirmation) {
    el.replaceChildren(wrap(bid.confirmation, h("p", { class: "ok big" }, t(`conf.${bid.confirmation}`))));
    return;
  }
  if (status === "announcing") {
    el.replaceChildren(wrap("not-open", h("p", {}, t("confirm.not_yet")), h("p", { class: "small muted" }, t("confirm.silence"))));
    return;
  }
  if (status !== "confirming" || view.record_sha256 || facts.confirmationClosed) {
    el.replaceChildren(wrap("closed", h("p", {}, t("confirm.closed"))));
    return;
  }
  const panel = h(
    "div",
    { id: "confirm-panel", class: "explain", "data-testid": "confirm-panel", hidden: !ui.confirmOpen },
    h("p", {}, t("confirm.explain")),
    commandBlock(cmd("confirm"), "cmd-confirm"),
    h("p", { class: "small" }, `${t("confirm.sha")}: `, h("span", { class: "mono hash", "data-testid": "confirm-sha" }, view.table_sha256)),
    h("p", { class: "small muted" }, t("confirm.silence")),
  );
  const button = h(
    "button",
    { type: "button", "data-testid": "confirm-button", "aria-expanded": String(ui.confirmOpen), "aria-controls": "confirm-panel" },
    t("confirm.button"),
  );
  button.addEventListener("click", () => {
    ui.confirmOpen = !ui.confirmOpen;
    button.setAttribute("aria-expanded", String(ui.confirmOpen));
    panel.hidden = !ui.confirmOpen;
    if (ui.confirmOpen) panel.querySelector("button")?.focus();
  });
  el.replaceChildren(wrap("open", button, panel));
}

function objectionsOpen(view, facts) {
  const status = effectiveStatus(view);
  return Boolean(view.own_bid) && OBJECTIONS_OPEN.includes(status) && !view.record_sha256 && !facts.confirmationClosed;
}

function renderObjections(state, model) {
  const { view, facts } = state;
  const list = byTestId("objections");
  const names = new Map((view.table ? view.table.rows : []).map((r) => [r.bidder, r.bidder_name]));
  const items = (view.objections || []).map((o) => {
    const own = o.bidder === model.me.party_id;
    const who = own ? t("common.you") : names.get(o.bidder) || o.bidder;
    return h(
      "li",
      { class: own ? "own" : "", "data-testid": `objection-${o.id}` },
      h(
        "div",
        { class: "obj-head" },
        h("strong", {}, t("obj.from", { id: o.id, who })),
        h("time", { class: "muted" }, fmtTime(o.at)),
        h("span", { class: "tag" }, o.public ? t("obj.public") : t("obj.private")),
      ),
      h("p", { class: "obj-text", "data-testid": `objection-text-${o.id}` }, o.text),
      o.reply !== null && o.reply !== undefined
        ? h(
            "div",
            { class: "reply", "data-testid": `objection-reply-${o.id}` },
            h("div", { class: "obj-head" }, h("strong", {}, t("obj.reply")), h("time", { class: "muted" }, fmtTime(o.replied_at))),
            h("p", {}, o.reply),
          )
        : h("p", { class: "muted awaiting", "data-testid": `objection-awaiting-${o.id}` }, t("obj.awaiting")),
    );
  });
  list.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, t("obj.none"))]));
  const open = objectionsOpen(view, facts);
  byTestId("objection-text").disabled = !open;
  byTestId("objection-send").disabled = !open;
  byTestId("objection-hint").textContent = open ? "" : t("obj.closed");
}

function render(state, model) {
  const { view, facts } = state;
  byTestId("others-hidden").hidden = Boolean(view.table);
  renderHall(state, model, {
    meKey: "bidder.me",
    meText: `${model.me.name} (${model.me.party_id})`,
    note: (text) => h("span", {}, text),
  });
  renderTimes(view, facts);
  renderOwnBid(view);
  renderSignIn(view);
  renderRehearsal(view, facts);
  renderDecryption(view, facts);
  renderConfirm(view, facts);
  renderObjections(state, model);
  const names = (code) => (code === model.me.party_id ? model.me.name : code);
  renderLog(byTestId("log"), state.events, names);
  const bidStatus = view.own_bid ? view.own_bid.status : null;
  if (ui.lastBidStatus !== null && bidStatus && ui.lastBidStatus !== bidStatus) announce(t(`bid.${bidStatus}`));
  ui.lastBidStatus = bidStatus;
  tick(model);
}

function tick(model) {
  tickHall(model);
  const offset = model.follower.offset / 1000;
  byTestId("offset").textContent = model.follower.synced && Math.abs(offset) >= 2 ? t("conn.offset", { s: offset.toFixed(1) }) : "";
}

const model = bootHall({ page: "bidder", roles: ["bidder"], render, tick });

if (model) {
  const sid = model.sessionId;
  byTestId("signin-button").addEventListener("click", async (ev) => {
    const button = ev.currentTarget;
    button.disabled = true;
    showError(byTestId("signin-error"), null);
    try {
      await api("POST", `/api/sessions/${encodeURIComponent(sid)}/sign-in`);
    } catch (err) {
      showError(byTestId("signin-error"), err);
      button.disabled = false;
    }
  });
  byTestId("objection-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = byTestId("objection-text");
    const send = byTestId("objection-send");
    const error = byTestId("objection-error");
    showError(error, null);
    showNotice(byTestId("objection-ok"), "");
    if (!requiredValue(text, error, { code: "TEXT_REQUIRED", zh: "请填写异议内容。", en: "Write the objection first." })) return;
    send.disabled = true;
    try {
      await api("POST", `/api/sessions/${encodeURIComponent(sid)}/objections`, { text: text.value.trim() });
      text.value = "";
      showNotice(byTestId("objection-ok"), t("obj.sent"));
    } catch (err) {
      showError(error, err);
    } finally {
      if (model.state) renderObjections(model.state, model);
    }
  });
}
