// The supervisor wall (监管大屏): every session in the supervisor's remit, each followed through its
// own hall connection (the shared follower of app.js: a cursor of positions, replay, then live),
// with its state, a live event feed, the rooms' video for evaluations, warnings (an evaluation's
// warning; an opening's suspension with a reason), the bid-rigging signals of the supervisor
// channel, and the archive download.
//
// What a card shows is the session as the supervisor may see it (GET, read at the supervisor's
// heads) and the events the hall delivers; a reloaded wall replays the same events and shows the
// same thing. Numbers shown are public ones (docs/positions.md): an event's `pos.all`.

import {
  ACTIVE,
  FollowedModel,
  I18N,
  answeredNumber,
  api,
  byTestId,
  currentLang,
  currentToken,
  eventBits,
  fmtSize,
  fmtTime,
  h,
  keepTokenFresh,
  logLine,
  pageAuth,
  renderConn,
  requiredValue,
  serverNow,
  showError,
  showNotice,
  shownNumber,
  statusText,
  t,
  textOr,
} from "/web/app.js";

const LIST_EVERY_MS = 15000;
const REFETCH_DELAY_MS = 120;
const ICE_WAIT_MS = 4000;

const wall = {
  auth: null,
  primary: null,
  boxes: new Map(), // session id -> SessionBox
  listError: null,
};

function enc(id) {
  return encodeURIComponent(id);
}

function kindPath(kind, sid, tail = "") {
  return kind === "evaluation" ? `/api/evaluations/${enc(sid)}${tail}` : `/api/sessions/${enc(sid)}${tail}`;
}

function sessionStatusText(kind, view) {
  if (kind === "opening") return statusText(view);
  if (view.status === "suspended") {
    return `${t("evstatus.suspended")} (${textOr(`evstatus.${view.suspended_from}`, view.suspended_from || "")})`;
  }
  return textOr(`evstatus.${view.status}`, view.status);
}

/** One line of a card's feed: the public number, Beijing time, a readable label and the payload's
 * gist; its element id (`feed-<card>-<event id>`) is what evidence links point at. */
function feedLine(box, e) {
  const p = e.payload || {};
  const bits = eventBits(e, box.namer());
  if (e.type === "supervisor_warning" && p.text) bits.push(`#${p.id} ${p.text}`);
  if (p.room_id) bits.push(p.room_id);
  if (typeof p.up === "boolean") bits.push(t(p.up ? "link.up" : "link.down"));
  const expert = p.expert_id || p.expert;
  if (typeof expert === "string") bits.push(expert);
  if (typeof p.stage === "string") bits.push(p.stage);
  if (e.type === "media_segment") bits.push(`#${p.index}`);
  if (e.type === "signal") bits.push(`${signalKind(p.kind)} ${fmtScore(p.score)}`);
  const quiet = e.type === "media_segment" || e.type === "sheet_content";
  return logLine(e, textOr(`ev.${e.type}`, e.type), bits, {
    id: feedId(box, e.id),
    tabindex: "-1",
    class: [quiet ? "dim" : null, e.type === "supervisor_warning" || e.type === "signal" ? "alerting" : null]
      .filter(Boolean)
      .join(" ") || null,
  });
}

function feedId(box, eventId) {
  return `feed-${box.index}-${eventId}`;
}

function fmtScore(score) {
  return typeof score === "number" ? score.toFixed(2) : "—";
}

function signalKind(kind) {
  return textOr(`sup.signal.kind.${kind}`, kind || "");
}

// --- one session ------------------------------------------------------------------------------------

class SessionBox extends FollowedModel {
  constructor(info, index) {
    super({ sessionId: info.session_id, auth: { ...wall.auth, token: currentToken() } });
    this.info = info;
    this.sid = info.session_id;
    this.kind = info.kind;
    this.index = index;
    this.rendered = new Map(); // event id -> li
    this.conn = ["connecting", null];
    this.refetch = null;
    this.pending = false;
    this.video = { pc: null, room: null, state: "idle", why: "" };
    this.bySubscription = false; // the server's media server (Janus) offers watched feeds
    this.onConn = (status, data) => {
      this.conn = [status, data];
      renderConn(this.connEl, status, data);
      renderSummary();
    };
    this.build();
  }

  replayed() {
    this.changed();
  }

  /** GET the session as the supervisor may see it (read at the supervisor's heads). */
  async refresh() {
    this.keepView(await api("GET", kindPath(this.kind, this.sid)));
    this.changed();
  }

  add(ev) {
    const after = this.place(ev);
    if (ev.type === "signal") renderSignals();
    // The state shown is the server's view: fetch it again once the burst of events is in.
    if (after && !this.refetch) {
      this.refetch = setTimeout(() => {
        this.refetch = null;
        this.refresh().catch((err) => showError(this.errorEl, err));
      }, REFETCH_DELAY_MS);
    }
    this.changed();
  }

  /** The last public event's number: the list's (GET /api/supervision/sessions, the
   * supervisor's heads) until the card has read its own view. */
  latest() {
    if (!this.snapshot && this.info.pos) return this.info.pos.all || 0;
    return super.latest();
  }

  namer() {
    const names = new Map();
    const view = this.snapshot ? this.snapshot.view : {};
    for (const b of view.bids || []) if (b.bidder_name) names.set(b.bidder, b.bidder_name);
    for (const r of (view.table && view.table.rows) || []) names.set(r.bidder, r.bidder_name);
    return (code) => names.get(code) || code;
  }

  title() {
    const view = this.snapshot ? this.snapshot.view : null;
    return (view && view.title) || this.info.title || this.sid;
  }

  changed() {
    if (this.pending) return;
    this.pending = true;
    setTimeout(() => {
      this.pending = false;
      this.render();
      renderSummary();
    }, 0);
  }

  // -- the card's skeleton (built once: typed text and a playing video survive every update) --

  build() {
    const idx = this.index;
    this.statusEl = h("p", { class: "status-line", "data-testid": "session-status" }, "—");
    this.connEl = h("span", { class: "conn small", role: "status", "data-testid": "session-conn" }, "—");
    this.factsEl = h("dl", { class: "facts", "data-testid": "session-facts" });
    this.bannerEl = h("div", { class: "banner warn", role: "status", "data-testid": "session-banner", hidden: true });
    this.errorEl = h("div", { class: "alert", role: "alert", "data-testid": "session-error", hidden: true });
    this.okEl = h("p", { class: "ok", role: "status", "data-testid": "session-ok", hidden: true });
    this.feedEl = h("ol", { class: "log feed", "data-testid": "feed", tabindex: "0" });
    this.headingEl = h("h2", { id: `card-h-${idx}` });
    const actions = this.kind === "evaluation" ? this.buildWarning() : this.buildSuspension();
    const parts = [
      h("div", { class: "card-head" }, this.headingEl, this.connEl),
      this.statusEl,
      this.bannerEl,
      this.factsEl,
    ];
    if (this.kind === "evaluation") parts.push(this.buildVideo());
    parts.push(actions, this.errorEl, this.okEl, this.buildArchive());
    this.feedHeading = h("h3", { id: `feed-h-${idx}` }, t("sup.feed"));
    parts.push(this.feedHeading, this.feedEl);
    this.el = h(
      "article",
      {
        class: "card session",
        id: `card-${idx}`,
        "data-testid": "session-card",
        "data-session": this.sid,
        "data-kind": this.kind,
        "aria-labelledby": `card-h-${idx}`,
      },
      ...parts,
    );
  }

  buildWarning() {
    const idx = this.index;
    this.warnText = h("textarea", { id: `warn-${idx}`, rows: "2", maxlength: "2000", "data-testid": "warning-text" });
    this.warnLabel = h("label", { for: `warn-${idx}` }, t("sup.warn.label"));
    this.warnButton = h("button", { type: "button", class: "warn", "data-testid": "warning-send" }, t("sup.warn.send"));
    this.warnButton.addEventListener("click", () => this.raiseWarning());
    this.warnListHeading = h("h3", {}, t("sup.warn.list"));
    this.warnList = h("ol", { class: "thread", "data-testid": "warnings" });
    this.actionsHeading = h("h3", {}, t("sup.warnings"));
    return h(
      "section",
      { class: "wall-actions" },
      this.actionsHeading,
      this.warnLabel,
      this.warnText,
      h("div", { class: "row" }, this.warnButton),
      this.warnListHeading,
      this.warnList,
    );
  }

  buildSuspension() {
    const idx = this.index;
    this.reasonInput = h("input", { id: `reason-${idx}`, type: "text", maxlength: "2000", "data-testid": "reason-text" });
    this.reasonLabel = h("label", { for: `reason-${idx}` }, t("sup.reason.label"));
    this.suspendButton = h("button", { type: "button", class: "warn", "data-testid": "suspend-button" }, t("sup.suspend"));
    this.resumeButton = h("button", { type: "button", "data-testid": "resume-button" }, t("sup.resume"));
    this.suspendButton.addEventListener("click", () => this.suspension("suspend"));
    this.resumeButton.addEventListener("click", () => this.suspension("resume"));
    this.actionsHeading = h("h3", {}, t("sup.warnings"));
    this.openingNote = h("p", { class: "muted small" }, t("sup.opening_note"));
    return h(
      "section",
      { class: "wall-actions" },
      this.actionsHeading,
      this.openingNote,
      this.reasonLabel,
      this.reasonInput,
      h("div", { class: "row" }, this.suspendButton, this.resumeButton),
    );
  }

  buildVideo() {
    const idx = this.index;
    this.videoEl = h("video", {
      muted: true,
      autoplay: true,
      playsinline: true,
      "data-testid": "video",
      "aria-describedby": `video-state-${idx}`,
    });
    this.videoEl.muted = true; // the attribute alone does not mute a script-made element
    this.videoEl.addEventListener("resize", () => this.videoPlaying());
    this.videoEl.addEventListener("playing", () => this.videoPlaying());
    this.videoStateEl = h("p", { class: "muted small", id: `video-state-${idx}`, "data-testid": "video-state", role: "status" });
    this.roomsEl = h("div", { class: "row rooms", "data-testid": "rooms" });
    this.videoHeading = h("h3", {}, t("sup.video"));
    this.tileEl = h("div", { class: "tile", "data-testid": "video-tile", "data-state": "idle" }, this.videoEl);
    return h("section", { class: "wall-video" }, this.videoHeading, this.roomsEl, this.tileEl, this.videoStateEl);
  }

  buildArchive() {
    this.archiveButton = h("button", { type: "button", class: "secondary", "data-testid": "archive-download" }, t("sup.archive.download"));
    this.archiveButton.addEventListener("click", () => this.downloadArchive());
    this.archiveState = h("p", { class: "muted small", role: "status", "data-testid": "archive-state" });
    return h("div", { class: "row archive" }, this.archiveButton, this.archiveState);
  }

  // -- updates --

  render() {
    const snap = this.snapshot;
    this.el.dataset.events = String(this.events.length);
    this.headingEl.replaceChildren(
      h("span", { class: "tag" }, t(`sup.kind.${this.kind}`)),
      " ",
      this.title(),
    );
    this.feedHeading.textContent = t("sup.feed");
    this.feedEl.setAttribute("aria-label", t("sup.feed.label", { title: this.title() }));
    if (!snap) return;
    const view = snap.view;
    this.statusEl.textContent = sessionStatusText(this.kind, view);
    this.statusEl.dataset.status = view.status;
    this.el.dataset.status = view.status;
    this.renderBanner(view);
    this.renderFacts(view);
    if (this.kind === "evaluation") {
      this.renderWarnings(view);
      this.renderRooms(view);
    } else {
      const suspended = view.status === "suspended";
      this.suspendButton.disabled = suspended || !ACTIVE.includes(view.status);
      this.resumeButton.disabled = !suspended;
    }
    this.renderFeed();
  }

  renderBanner(view) {
    let reason = null;
    if (view.status === "suspended") {
      for (const e of this.events) {
        if (e.type === "session_suspended" || e.type === "evaluation_suspended") reason = (e.payload || {}).reason || "";
        if (e.type === "session_resumed" || e.type === "evaluation_resumed") reason = null;
      }
      if (reason === null) reason = "";
    }
    showNotice(this.bannerEl, reason === null ? "" : t("sup.suspended", { reason }));
  }

  renderFacts(view) {
    const rows = [];
    const add = (k, v, testid) => rows.push(h("dt", {}, k), h("dd", { "data-testid": testid }, v));
    if (this.kind === "opening") {
      add(t("session.deadline"), fmtTime(view.timetable && view.timetable.deadline), "fact-deadline");
      add(
        t("sup.fact.bids"),
        Array.isArray(view.bids) ? t("sup.bids", { n: view.bids.length }) : t("sup.bids_hidden"),
        "fact-bids",
      );
      add(t("host.presence"), t("host.supervisors", { n: view.supervisors_present ?? 0 }), "fact-presence");
    } else {
      add(t("sup.fact.members"), t("sup.members", { n: (view.signed_in || []).length, m: view.committee_size ?? 0 }), "fact-members");
      add(t("sup.rooms"), `${view.rooms_up ?? 0}/${view.rooms_drawn ?? 0} ${t("link.up")}`, "fact-rooms");
      add(t("host.presence"), t("host.supervisors", { n: view.supervisors_present ?? 0 }), "fact-presence");
      if (view.opening_session_id) add(t("sup.kind.opening"), view.opening_session_id, "fact-opening");
    }
    add(t("common.latest"), `#${this.latest()}`, "fact-latest");
    this.factsEl.replaceChildren(...rows);
  }

  renderWarnings(view) {
    const items = (view.warnings || []).slice().reverse();
    this.warnList.replaceChildren(
      ...(items.length
        ? items.map((w) => h("li", { "data-testid": `warning-${w.id}` }, h("strong", {}, `#${w.id} `), w.text))
        : [h("li", { class: "muted" }, t("sup.warn.none"))]),
    );
  }

  renderRooms(view) {
    const rooms = view.rooms || {};
    const ids = Object.keys(rooms).sort();
    const buttons = ids.map((room) => {
      const r = rooms[room] || {};
      const role = r.role === "lead" ? t("sup.room.lead") : t("sup.room.secondary");
      const b = h(
        "button",
        {
          type: "button",
          class: `small ${this.video.room === room ? "" : "secondary"}`,
          "data-testid": `watch-${room}`,
          "aria-pressed": this.video.room === room ? "true" : "false",
        },
        `${t("sup.video.watch", { room })} · ${role} · ${t(r.up ? "link.up" : "link.down")}`,
      );
      b.addEventListener("click", () => this.watch(room));
      return b;
    });
    if (this.video.pc) {
      const stop = h("button", { type: "button", class: "small secondary", "data-testid": "watch-stop" }, t("sup.video.stop"));
      stop.addEventListener("click", () => this.stopVideo(true));
      buttons.push(stop);
    }
    this.roomsEl.replaceChildren(...(buttons.length ? buttons : [h("span", { class: "muted" }, t("sup.video.none"))]));
    this.renderVideoState();
  }

  renderVideoState() {
    const v = this.video;
    this.tileEl.dataset.state = v.state;
    this.tileEl.dataset.room = v.room || "";
    if (v.room) this.videoEl.setAttribute("aria-label", t("sup.video.label", { room: v.room }));
    const text = {
      idle: t("sup.video.idle"),
      connecting: t("sup.video.connecting", { room: v.room }),
      playing: t("sup.video.playing", { room: v.room }),
      failed: t("sup.video.failed", { why: v.why }),
    }[v.state];
    this.videoStateEl.textContent = text;
  }

  renderFeed() {
    const fresh = this.events.filter((e) => !this.rendered.has(e.id));
    if (!fresh.length && this.rendered.size) return;
    // The events are in log order: when the new ones are the last, they go on top as they are.
    if (this.events.slice(this.events.length - fresh.length).every((e) => !this.rendered.has(e.id))) {
      for (const e of fresh) {
        const li = feedLine(this, e);
        this.rendered.set(e.id, li);
        this.feedEl.prepend(li);
      }
    } else {
      this.rebuildFeed();
    }
    const empty = this.feedEl.querySelector("li.muted");
    if (this.rendered.size && empty) empty.remove();
    if (!this.rendered.size && !empty) this.feedEl.replaceChildren(h("li", { class: "muted" }, t("log.empty")));
  }

  rebuildFeed() {
    this.rendered.clear();
    const items = this.events
      .slice()
      .reverse()
      .map((e) => {
        const li = feedLine(this, e);
        this.rendered.set(e.id, li);
        return li;
      });
    this.feedEl.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, t("log.empty"))]));
  }

  relabel() {
    for (const [key, el] of [
      ["sup.warnings", this.actionsHeading],
      ["sup.warn.label", this.warnLabel],
      ["sup.warn.send", this.warnButton],
      ["sup.warn.list", this.warnListHeading],
      ["sup.reason.label", this.reasonLabel],
      ["sup.suspend", this.suspendButton],
      ["sup.resume", this.resumeButton],
      ["sup.opening_note", this.openingNote],
      ["sup.video", this.videoHeading],
      ["sup.archive.download", this.archiveButton],
    ]) {
      if (el) el.textContent = t(key);
    }
    renderConn(this.connEl, ...this.conn);
    this.rebuildFeed();
    this.render();
  }

  // -- actions --

  async raiseWarning() {
    showError(this.errorEl, null);
    showNotice(this.okEl, "");
    const text = requiredValue(this.warnText, this.errorEl, { code: "REASON_REQUIRED", zh: I18N.zh["sup.warn.empty"], en: I18N.en["sup.warn.empty"] });
    if (!text) return;
    this.warnButton.disabled = true;
    try {
      const out = await api("POST", kindPath("evaluation", this.sid, "/warnings"), { text });
      this.warnText.value = "";
      showNotice(this.okEl, t("sup.warn.sent", { n: answeredNumber(out) }));
    } catch (err) {
      showError(this.errorEl, err);
    } finally {
      this.warnButton.disabled = false;
    }
  }

  async suspension(what) {
    showError(this.errorEl, null);
    showNotice(this.okEl, "");
    const reason = requiredValue(this.reasonInput, this.errorEl, { code: "REASON_REQUIRED", zh: I18N.zh["sup.reason.empty"], en: I18N.en["sup.reason.empty"] });
    if (!reason) return;
    const button = what === "suspend" ? this.suspendButton : this.resumeButton;
    button.disabled = true;
    try {
      const out = await api("POST", kindPath("opening", this.sid, `/${what}`), { reason });
      this.reasonInput.value = "";
      showNotice(this.okEl, t("sup.done", { what: t(`sup.${what}`), n: answeredNumber(out) }));
    } catch (err) {
      showError(this.errorEl, err);
    } finally {
      this.changed();
    }
  }

  async downloadArchive() {
    showError(this.errorEl, null);
    this.archiveButton.disabled = true;
    this.archiveState.textContent = t("sup.archive.busy");
    try {
      const response = await fetch(`/api/supervision/sessions/${enc(this.sid)}/archive`, {
        headers: { Authorization: `Bearer ${currentToken()}` },
        cache: "no-store",
      });
      if (!response.ok) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          body = null;
        }
        throw body && body.code ? body : { code: `HTTP_${response.status}`, zh: "请求失败", en: "the request failed" };
      }
      const blob = await response.blob();
      const disposition = response.headers.get("Content-Disposition") || "";
      const name = (disposition.match(/filename="([^"]+)"/) || [])[1] || "archive.zip";
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      this.archiveState.textContent = t("sup.archive.done", { name, size: fmtSize(blob.size) });
    } catch (err) {
      this.archiveState.textContent = "";
      showError(this.errorEl, err);
    } finally {
      this.archiveButton.disabled = false;
    }
  }

  /** Watch one room: a receive-only WebRTC link. With the built-in media backend the page
   * offers and the lead site answers (media/offer); with a media server (Janus) the server
   * offers and the page answers (media/subscribe, then the subscription's answer). The server
   * says which by refusing the first with MEDIA_SUBSCRIBE; the page remembers it. */
  async watch(room) {
    let iceServers = [];
    try {
      iceServers = await turnServers();
    } catch (err) {
      showError(this.errorEl, err); // watch without the relay: loopback and LANs still work
    }
    this.stopVideo(false);
    const pc = new RTCPeerConnection({ iceServers });
    this.video = { pc, room, state: "connecting", why: "" };
    this.renderRooms(this.snapshot.view);
    const stream = new MediaStream();
    pc.addEventListener("track", (e) => {
      stream.addTrack(e.track);
      this.videoEl.srcObject = stream;
      this.videoEl.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => {
      if (this.video.pc === pc && pc.connectionState === "failed") this.videoFailed(pc, "ICE");
    });
    try {
      if (this.bySubscription) await this.answerOffer(pc, room);
      else await this.offerTo(pc, room);
    } catch (err) {
      if (err && err.code === "MEDIA_SUBSCRIBE" && !this.bySubscription) {
        this.bySubscription = true;
        if (this.video.pc === pc) await this.watch(room);
        return;
      }
      if (err && err.code) showError(this.errorEl, err);
      this.videoFailed(pc, (err && err.code) || String(err));
    }
  }

  async offerTo(pc, room) {
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc);
    const answer = await api("POST", kindPath("evaluation", this.sid, "/media/offer"), {
      sdp: pc.localDescription.sdp,
      type: "offer",
      watch: room,
    });
    if (this.video.pc !== pc) return;
    await pc.setRemoteDescription(answer);
  }

  async answerOffer(pc, room) {
    const offer = await api("POST", kindPath("evaluation", this.sid, "/media/subscribe"), {
      watch: room,
    });
    if (this.video.pc !== pc) return;
    await pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await iceGathered(pc);
    if (this.video.pc !== pc) return;
    const sub = encodeURIComponent(offer.subscription);
    await api("POST", kindPath("evaluation", this.sid, `/media/subscriptions/${sub}/answer`), {
      sdp: pc.localDescription.sdp,
      type: "answer",
    });
  }

  videoPlaying() {
    if (this.video.pc && this.videoEl.videoWidth > 0 && this.video.state !== "playing") {
      this.video.state = "playing";
      this.renderVideoState();
    }
  }

  videoFailed(pc, why) {
    if (this.video.pc !== pc) return;
    this.video.state = "failed";
    this.video.why = why;
    this.renderVideoState();
  }

  stopVideo(render) {
    if (this.video.pc) this.video.pc.close();
    this.video = { pc: null, room: null, state: "idle", why: "" };
    if (this.videoEl) this.videoEl.srcObject = null;
    if (render && this.snapshot) this.renderRooms(this.snapshot.view);
  }
}

/** The server's TURN relay with time-limited credentials (none if it has no relay), asked
 * again once the credentials are past half their life. */
let turn = { servers: null, until: 0 };
async function turnServers() {
  if (turn.servers && Date.now() < turn.until) return turn.servers;
  try {
    const t = await api("GET", "/api/media/turn");
    turn = {
      servers: [{ urls: t.urls, username: t.username, credential: t.credential }],
      until: Date.now() + (t.ttl * 1000) / 2,
    };
  } catch (err) {
    if (!err || err.code !== "TURN_NOT_CONFIGURED") throw err;
    turn = { servers: [], until: Date.now() + 10 * 60 * 1000 };
  }
  return turn.servers;
}

/** The offer goes out whole (the server does not take trickled candidates). */
function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_WAIT_MS);
  });
}

// --- the wall -------------------------------------------------------------------------------------

function boxes() {
  return [...wall.boxes.values()];
}

function renderSummary() {
  const all = boxes();
  const live = all.filter((b) => b.conn[0] === "live").length;
  const connEl = byTestId("conn");
  const refused = all.find((b) => b.conn[0] === "refused");
  if (refused) renderConn(connEl, ...refused.conn);
  else {
    connEl.dataset.state = all.length && live === all.length ? "live" : live ? "partial" : "connecting";
    connEl.textContent = t("sup.live_count", { n: live, m: all.length });
  }
  const overview = byTestId("overview");
  if (!all.length) {
    overview.replaceChildren(h("p", { class: "muted" }, wall.listError ? "" : t("sup.none")));
  } else {
    const head = ["sup.col.kind", "sup.col.title", "sup.col.status", "sup.col.link", "sup.col.latest"];
    const rows = all.map((b) => {
      const view = b.snapshot ? b.snapshot.view : null;
      return h(
        "tr",
        { "data-testid": "overview-row", "data-session": b.sid, "data-status": view ? view.status : "" },
        h("td", {}, t(`sup.kind.${b.kind}`)),
        h("th", { scope: "row" }, h("a", { href: `#card-${b.index}`, "aria-label": t("sup.jump", { title: b.title() }) }, b.title())),
        h("td", {}, view ? sessionStatusText(b.kind, view) : t("common.loading")),
        h("td", { class: "conn-cell", "data-state": b.conn[0] }, t(`conn.${b.conn[0]}`)),
        h("td", { class: "num mono", "data-testid": "overview-latest" }, `#${b.latest()}`),
      );
    });
    overview.replaceChildren(
      h(
        "div",
        { class: "table-wrap", tabindex: "0", role: "region", "aria-label": t("sup.overview") },
        h(
          "table",
          { "data-testid": "overview-table" },
          h("thead", {}, h("tr", {}, ...head.map((k) => h("th", { scope: "col" }, t(k))))),
          h("tbody", {}, ...rows),
        ),
      ),
    );
  }
  document.body.dataset.events = String(all.reduce((n, b) => n + b.events.length, 0));
  document.body.dataset.sessions = String(all.length);
}

/** A signal's evidence: a link to the event it names in its card's feed (by the event's id), with
 * the event's public number and label once the feed holds it; else what the server wrote. */
function evidenceItem(box, ev) {
  const target = wall.boxes.get(ev.session_id) || box;
  const event = typeof ev.id === "string" ? target.events.find((e) => e.id === ev.id) : null;
  const what = event ? `${shownNumber(event)} ${textOr(`ev.${event.type}`, event.type)}`.trim() : ev.ref || "";
  const text = `${what}${ev.note ? ` — ${ev.note}` : ""}`;
  if (typeof ev.id !== "string" || !ev.id) return h("li", {}, h("span", {}, text));
  return h("li", {}, h("a", { href: `#${feedId(target, ev.id)}`, "data-testid": "evidence-link", "data-id": ev.id }, text));
}

/** Signals (issue 6) are events of type "signal" in the supervisor channel, newest first. */
function renderSignals() {
  const list = byTestId("signals");
  const found = [];
  for (const b of boxes()) b.events.forEach((e, i) => e.type === "signal" && found.push([b, e, i]));
  found.sort(([, x, i], [, y, j]) => String(y.at).localeCompare(String(x.at)) || j - i);
  if (!found.length) {
    list.replaceChildren(h("li", { class: "muted", "data-testid": "signals-none" }, t("sup.signals.none")));
    return;
  }
  const lang = currentLang();
  list.replaceChildren(
    ...found.map(([box, e]) => {
      const p = e.payload || {};
      const evidence = (p.evidence || []).map((ev) => evidenceItem(box, ev));
      return h(
        "li",
        { class: "signal", "data-testid": "signal", "data-kind": p.kind || "", "data-id": e.id },
        h(
          "p",
          { class: "signal-head" },
          h("strong", {}, signalKind(p.kind)),
          " ",
          h("span", { class: "badge" }, t("sup.signal.score", { score: fmtScore(p.score) })),
          " ",
          h("span", { class: "muted small" }, `${box.title()} · ${fmtTime(e.at)}`),
        ),
        h("p", {}, lang === "zh" ? p.explanation_zh || p.explanation_en || "" : p.explanation_en || p.explanation_zh || ""),
        (p.subjects || []).length ? h("p", { class: "small" }, t("sup.signal.subjects", { who: p.subjects.map(box.namer()).join("、") })) : null,
        evidence.length ? h("div", { class: "small" }, t("sup.signal.evidence"), h("ul", { class: "plain" }, ...evidence)) : null,
      );
    }),
  );
}

/** GET the list of sessions; follow each new one with its own card and hall connection. */
async function loadList() {
  const fatal = byTestId("fatal");
  let out;
  try {
    out = await api("GET", "/api/supervision/sessions");
    wall.listError = null;
  } catch (err) {
    wall.listError = err;
    showError(fatal, err);
    return;
  }
  const container = byTestId("sessions");
  for (const info of out.sessions) {
    const known = wall.boxes.get(info.session_id);
    if (known) {
      known.info = info;
      continue;
    }
    const box = new SessionBox(info, wall.boxes.size + 1);
    wall.boxes.set(info.session_id, box);
    container.append(box.el);
    box.start().catch((err) => showError(box.errorEl, err));
  }
  // The session the link named first, then the rest as the server listed them (oldest first).
  const primary = wall.boxes.get(wall.primary);
  if (primary && container.firstChild !== primary.el) container.prepend(primary.el);
  renderSummary();
  renderSignals();
}

function followFocus() {
  // An evidence link moves the keyboard focus to the event it names.
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest && ev.target.closest("a[href^='#feed-']");
    if (!a) return;
    const li = document.getElementById(a.getAttribute("href").slice(1));
    if (li) {
      ev.preventDefault();
      li.scrollIntoView({ block: "center" });
      li.focus();
      li.classList.add("flash");
      setTimeout(() => li.classList.remove("flash"), 2000);
    }
  });
}

function boot() {
  const fatal = byTestId("fatal");
  wall.primary = new URLSearchParams(location.search).get("session");
  const auth = pageAuth(wall.primary, ["supervisor"], fatal);
  if (!auth) return;
  wall.auth = auth;
  keepTokenFresh(auth, (err) => showError(fatal, err));
  const showMe = () => byTestId("me").replaceChildren(h("span", { class: "meta-item" }, `${t("sup.me")}: `, h("strong", {}, auth.name)));
  showMe();
  byTestId("reload-list").addEventListener("click", () => loadList());
  document.addEventListener("langchange", () => {
    showMe();
    for (const b of boxes()) b.relabel();
    renderSummary();
    renderSignals();
  });
  followFocus();
  loadList();
  setInterval(loadList, LIST_EVERY_MS);
  setInterval(() => {
    byTestId("server-time").textContent = fmtTime(serverNow());
  }, 250);
}

boot();
