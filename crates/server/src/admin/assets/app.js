// The admin page: logs in over WAMP (wamp.js), then shows the realm's
// sessions, registrations, subscriptions and queues from the meta API and
// switchyard.queue.*, kept live by the meta events and a 2 s poll.
// Every value from the router is put into the page as text (never as
// HTML): authids, URIs and job arguments come from clients.
'use strict';

(() => {
  const POLL_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const state = {
    cfg: null, session: null, timer: null, view: 'overview',
    sessions: new Map(), // id -> {details, prev: {t, in, out}, rateIn, rateOut}
    queues: new Map(), // name -> {stats, prev: {t, completed, retried}, done, retried}
    selectedQueue: null, chart: null, busy: false, refreshSoon: new Set(), refreshTimer: null,
  };

  // ------------------------------------------------------------- helpers ---
  function h(tag, attrs = {}, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k === 'onclick') e.addEventListener('click', v);
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? '' : String(c)));
    return e;
  }

  function fill(tbody, rows, cols, emptyText) {
    tbody.replaceChildren(...(rows.length ? rows
      : [h('tr', { class: 'empty' }, h('td', { colSpan: cols }, emptyText))]));
  }

  const ago = (ms) => {
    if (ms == null || Number.isNaN(ms)) return '–';
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  };
  const since = (iso) => (iso ? ago(Date.now() - Date.parse(iso)) : '–');
  const rate = (v) => (v == null ? '–' : (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10));
  const short = (v) => { const s = JSON.stringify(v); return s && s.length > 160 ? `${s.slice(0, 157)}...` : s; };
  const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '–');

  function showError(where, err) {
    const box = $(where);
    if (!err) { box.hidden = true; box.textContent = ''; return; }
    box.hidden = false;
    box.textContent = err instanceof Error ? err.message : String(err);
  }

  function notAuthorized(err) {
    return err && err.uri === 'wamp.error.not_authorized';
  }

  /** Arms a button on the first click; runs `action` on a second click within 3 s. */
  function twoClick(button, label, action) {
    let armed = null;
    button.addEventListener('click', async () => {
      if (!armed) {
        button.classList.add('armed');
        button.textContent = `${label}?`;
        armed = setTimeout(() => { armed = null; button.classList.remove('armed'); button.textContent = label; }, 3000);
        return;
      }
      clearTimeout(armed); armed = null;
      button.classList.remove('armed'); button.textContent = label;
      await action();
    });
    button.textContent = label;
    return button;
  }

  // --------------------------------------------------------------- login ---
  function wsUrl(cfg) {
    // The page is at <prefix><admin_path>/; the WebSocket at <prefix><ws_path>,
    // so a proxy that serves the router under a prefix keeps working.
    const path = location.pathname;
    const at = path.lastIndexOf(cfg.admin_path + '/');
    const prefix = at >= 0 ? path.slice(0, at) : '';
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}${prefix}${cfg.ws_path}`;
  }

  async function login(ev) {
    ev.preventDefault();
    showError('login-error', null);
    const button = $('login-button');
    button.disabled = true;
    const authmethod = $('authmethod').value;
    try {
      const session = await WAMP.connect({
        url: wsUrl(state.cfg), realm: state.cfg.realm, authmethod,
        authid: $('authid').value.trim(), secret: $('secret').value,
      });
      const role = session.details.authrole;
      // The router decides: a role that may not use the meta API is refused here.
      try {
        await session.call('wamp.session.list');
      } catch (e) {
        session.close();
        if (notAuthorized(e)) {
          throw new Error(`Refused: the router does not let the role "${role}" call wamp.session.list ` +
            `(${e.message}). Grant the admin role the meta API (see docs/ADMIN.md).`);
        }
        throw e;
      }
      // A role the router lets read the meta API, but not the one this page
      // is configured for ([admin] role): refused too, so that the page is
      // used by the role the operator meant.
      if (role !== state.cfg.role) {
        session.close();
        throw new Error(`Refused: you logged in as "${session.details.authid}" with the role "${role}". ` +
          `This page needs the role "${state.cfg.role}" (see docs/ADMIN.md).`);
      }
      $('secret').value = '';
      await start(session);
    } catch (e) {
      let msg = e instanceof Error ? e.message : String(e);
      if (e && e.uri && e.uri.startsWith('wamp.error.')) msg = `Login failed: ${msg}`;
      showError('login-error', msg);
    } finally {
      button.disabled = false;
    }
  }

  async function start(session) {
    state.session = session;
    $('login').hidden = true;
    $('app').hidden = false;
    $('who').hidden = false;
    $('who-text').textContent = `${session.details.authid} (${session.details.authrole}) · realm ${state.cfg.realm} · session ${session.id}`;
    setLive(true);
    session.onclose = (why) => { setLive(false); showError('app-error', `${why}. Reload the page to log in again.`); stop(); };
    if (!state.chart) {
      state.chart = new RateChart.Chart($('rate-chart'), [{ name: 'in', cls: 'in' }, { name: 'out', cls: 'out' }], 90, POLL_MS / 1000);
    }
    await subscribeMeta(session);
    await refreshAll();
    state.timer = setInterval(() => refreshAll(), POLL_MS);
  }

  function stop() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  function setLive(up) {
    const p = $('conn-state');
    p.textContent = up ? 'live' : 'disconnected';
    p.classList.toggle('down', !up);
  }

  function logout() {
    stop();
    if (state.session) state.session.close();
    state.session = null;
    location.reload();
  }

  // ---------------------------------------------------------- meta events ---
  async function subscribeMeta(session) {
    const topics = {
      'wamp.session.on_join': 'sessions', 'wamp.session.on_leave': 'sessions',
      'wamp.registration.on_create': 'registrations', 'wamp.registration.on_register': 'registrations',
      'wamp.registration.on_unregister': 'registrations', 'wamp.registration.on_delete': 'registrations',
      'wamp.subscription.on_create': 'subscriptions', 'wamp.subscription.on_subscribe': 'subscriptions',
      'wamp.subscription.on_unsubscribe': 'subscriptions', 'wamp.subscription.on_delete': 'subscriptions',
    };
    const refused = [];
    await Promise.all(Object.entries(topics).map(async ([topic, what]) => {
      try {
        await session.subscribe(topic, (args) => {
          if (topic === 'wamp.session.on_leave') state.sessions.delete(Number(args[0]));
          scheduleRefresh(what);
        });
      } catch (e) {
        refused.push(topic);
      }
    }));
    if (refused.length) {
      showError('app-error', `Live updates limited: not allowed to subscribe to ${refused.join(', ')} (the page still polls every ${POLL_MS / 1000} s).`);
    }
  }

  // Meta events trigger a refresh of their view, at most one per
  // REFRESH_GAP_MS whatever the churn: a burst of joins costs the router one
  // round of calls, not one per event.
  const REFRESH_GAP_MS = 300;
  function scheduleRefresh(what) {
    state.refreshSoon.add(what);
    if (state.refreshTimer) return;
    state.refreshTimer = setTimeout(() => {
      state.refreshTimer = null;
      const parts = [...state.refreshSoon];
      state.refreshSoon.clear();
      for (const p of parts) refreshPart(p);
    }, REFRESH_GAP_MS);
  }

  async function refreshPart(what) {
    try {
      if (what === 'sessions') await refreshSessions();
      if (what === 'registrations') await refreshRegistrations();
      if (what === 'subscriptions') await refreshSubscriptions();
    } catch (e) { if (state.session) showError('app-error', e); }
  }

  // ------------------------------------------------------------ refresh ---
  async function refreshAll() {
    if (state.busy || !state.session) return;
    state.busy = true;
    try {
      await Promise.all([refreshSessions(true), refreshRegistrations(), refreshSubscriptions(), refreshQueues()]);
      if (state.selectedQueue) await refreshQueueDetail();
    } catch (e) {
      if (state.session && !state.session.closed) showError('app-error', e);
    } finally {
      state.busy = false;
    }
  }

  async function refreshSessions(sample = false) {
    const s = state.session;
    const { args } = await s.call('wamp.session.list');
    const ids = args[0] || [];
    const now = performance.now();
    const details = await Promise.all(ids.map((id) => s.call('wamp.session.get', [id])
      .then((r) => r.args[0]).catch(() => null)));
    const seen = new Set();
    let sumIn = 0, sumOut = 0, anyRate = false;
    for (const d of details) {
      if (!d) continue;
      seen.add(d.session);
      const entry = state.sessions.get(d.session) || { fresh: true };
      const st = d.stats || {};
      if (entry.prev && st.messages_in != null) {
        const dt = (now - entry.prev.t) / 1000;
        if (dt > 0.2) {
          entry.rateIn = (st.messages_in - entry.prev.in) / dt;
          entry.rateOut = (st.messages_out - entry.prev.out) / dt;
          entry.prev = { t: now, in: st.messages_in, out: st.messages_out };
        }
      } else if (st.messages_in != null) {
        entry.prev = { t: now, in: st.messages_in, out: st.messages_out };
      }
      // The chart leaves out this page's own session (its polling).
      const self = state.session && d.session === state.session.id;
      if (entry.rateIn != null && !self) { sumIn += entry.rateIn; sumOut += entry.rateOut; anyRate = true; }
      entry.details = d;
      state.sessions.set(d.session, entry);
    }
    for (const id of [...state.sessions.keys()]) if (!seen.has(id)) state.sessions.delete(id);
    if (sample && state.chart) state.chart.push(anyRate ? [sumIn, sumOut] : [0, 0]);
    renderSessions();
  }

  function renderSessions() {
    const rows = [...state.sessions.values()]
      .sort((a, b) => (a.details.joined || '').localeCompare(b.details.joined || ''))
      .map((e) => {
        const d = e.details, t = d.transport || {};
        const self = state.session && d.session === state.session.id;
        const kill = self ? h('span', { class: 'muted' }, 'you')
          : twoClick(h('button', { type: 'button', class: 'kill', 'data-session': String(d.session) }), 'Kill', async () => {
            try {
              await state.session.call('wamp.session.kill', [d.session], { reason: 'wamp.close.killed', message: 'killed from the admin page' });
              scheduleRefresh('sessions');
            } catch (err) { showError('app-error', err); }
          });
        const tr = h('tr', { 'data-session': String(d.session), 'data-authid': d.authid || '', class: e.fresh ? 'fresh' : '' },
          h('td', { class: 'mono' }, d.session),
          h('td', {}, d.authid),
          h('td', {}, d.authrole),
          h('td', {}, d.authmethod),
          h('td', {}, [t.type, t.serializer].filter(Boolean).join(' / ') + (t.tls ? ' (TLS)' : '')),
          h('td', { class: 'mono' }, t.peer_ip || (t.peer || '').split(' ')[0] || '–'),
          h('td', { title: d.joined || '' }, since(d.joined)),
          h('td', { class: 'num' }, rate(e.rateIn)),
          h('td', { class: 'num' }, rate(e.rateOut)),
          h('td', {}, kill));
        e.fresh = false;
        return tr;
      });
    fill($('sessions-table').tBodies[0], rows, 10, 'no sessions');
    $('count-sessions').textContent = $('tile-sessions').textContent = String(state.sessions.size);
  }

  async function listPatterns(prefix) {
    const s = state.session;
    const { args } = await s.call(`wamp.${prefix}.list`);
    const l = args[0] || {};
    return [...(l.exact || []), ...(l.prefix || []), ...(l.wildcard || [])];
  }

  async function refreshRegistrations() {
    const s = state.session;
    const ids = await listPatterns('registration');
    const regs = await Promise.all(ids.map(async (id) => {
      try {
        const [{ args: g }, { args: c }] = await Promise.all([
          s.call('wamp.registration.get', [id]), s.call('wamp.registration.list_callees', [id])]);
        return { ...(g[0] || {}), callees: c[0] || [] };
      } catch (_) { return null; }
    }));
    const rows = regs.filter(Boolean).sort((a, b) => String(a.uri).localeCompare(String(b.uri))).map((r) =>
      h('tr', { 'data-uri': r.uri },
        h('td', { class: 'mono' }, r.id), h('td', { class: 'mono' }, r.uri), h('td', {}, r.match),
        h('td', {}, r.invoke || 'single'), h('td', { title: r.created || '' }, since(r.created)),
        h('td', {}, sessionNames(r.callees))));
    fill($('registrations-table').tBodies[0], rows, 6, 'no registrations');
    $('count-registrations').textContent = $('tile-registrations').textContent = String(rows.length);
  }

  async function refreshSubscriptions() {
    const s = state.session;
    const ids = await listPatterns('subscription');
    const subs = await Promise.all(ids.map(async (id) => {
      try {
        const [{ args: g }, { args: c }] = await Promise.all([
          s.call('wamp.subscription.get', [id]), s.call('wamp.subscription.list_subscribers', [id])]);
        return { ...(g[0] || {}), subscribers: c[0] || [] };
      } catch (_) { return null; }
    }));
    const rows = subs.filter(Boolean).sort((a, b) => String(a.uri).localeCompare(String(b.uri))).map((r) =>
      h('tr', { 'data-uri': r.uri },
        h('td', { class: 'mono' }, r.id), h('td', { class: 'mono' }, r.uri), h('td', {}, r.match),
        h('td', { title: r.created || '' }, since(r.created)), h('td', {}, sessionNames(r.subscribers))));
    fill($('subscriptions-table').tBodies[0], rows, 5, 'no subscriptions');
    $('count-subscriptions').textContent = $('tile-subscriptions').textContent = String(rows.length);
  }

  function sessionNames(ids) {
    return ids.map((id) => {
      const e = state.sessions.get(id);
      return e ? `${id} (${e.details.authid})` : String(id);
    }).join(', ') || '–';
  }

  // -------------------------------------------------------------- queues ---
  async function refreshQueues() {
    let list;
    try {
      ({ args: [list] } = await state.session.call('switchyard.queue.list'));
    } catch (e) {
      if (e.uri === 'wamp.error.no_such_procedure') list = []; // no queue service in this realm
      else throw e;
    }
    const now = performance.now();
    let waiting = 0, dead = 0;
    const seen = new Set();
    for (const q of list || []) {
      seen.add(q.name);
      const e = state.queues.get(q.name) || {};
      if (e.prev) {
        const dt = (now - e.prev.t) / 1000;
        if (dt > 0.2) {
          e.done = (q.completed_total - e.prev.completed) / dt;
          e.retried = (q.retried_total - e.prev.retried) / dt;
          e.prev = { t: now, completed: q.completed_total, retried: q.retried_total };
        }
      } else {
        e.prev = { t: now, completed: q.completed_total, retried: q.retried_total };
      }
      e.stats = q;
      state.queues.set(q.name, e);
      waiting += (q.ready || 0) + (q.scheduled || 0);
      dead += q.dead || 0;
    }
    for (const n of [...state.queues.keys()]) if (!seen.has(n)) state.queues.delete(n);
    $('tile-queued').textContent = String(waiting);
    $('tile-dead').textContent = String(dead);
    renderQueues();
  }

  function renderQueues() {
    const rows = [...state.queues.values()].sort((a, b) => a.stats.name.localeCompare(b.stats.name)).map((e) => {
      const q = e.stats;
      return h('tr', { 'data-queue': q.name, class: q.name === state.selectedQueue ? 'selected' : '' },
        h('td', { class: 'mono' }, q.name),
        h('td', { class: 'num', 'data-field': 'ready' }, q.ready),
        h('td', { class: 'num', 'data-field': 'scheduled' }, q.scheduled),
        h('td', { class: 'num', 'data-field': 'in_flight' }, q.in_flight),
        h('td', { class: 'num', 'data-field': 'dead' }, q.dead),
        h('td', { class: 'num' }, q.oldest_ready_age_ms == null ? '–' : ago(q.oldest_ready_age_ms)),
        h('td', { class: 'num' }, rate(e.done)),
        h('td', { class: 'num' }, rate(e.retried)),
        h('td', { class: 'num' }, q.completed_total),
        h('td', {}, h('button', { type: 'button', onclick: () => selectQueue(q.name) }, 'Jobs')));
    });
    fill($('queues-table').tBodies[0], rows, 10, 'no queues in this realm');
    $('count-queues').textContent = String(state.queues.size);
  }

  async function selectQueue(name) {
    state.selectedQueue = name;
    $('queue-detail').hidden = false;
    $('queue-name').textContent = name;
    $('queue-message').textContent = '';
    renderQueues();
    try { await refreshQueueDetail(); } catch (e) { showError('app-error', e); }
  }

  async function refreshQueueDetail() {
    const q = state.selectedQueue, s = state.session;
    const [{ args: [ready] }, { args: [deadJobs] }] = await Promise.all([
      s.call('switchyard.queue.peek', [q], { limit: 50 }), s.call('switchyard.queue.dead', [q], { limit: 50 })]);
    const args = (j) => short({ args: j.job.args, kwargs: j.job.kwargs });
    fill($('ready-table').tBodies[0], (ready || []).map((j) => h('tr', { 'data-job': String(j.job.id) },
      h('td', { class: 'mono' }, j.job.id), h('td', {}, j.status.state), h('td', {}, j.status.attempts),
      h('td', {}, time(j.job.created_at_ms)), h('td', { class: 'mono args', title: args(j) }, args(j)))), 5, 'no waiting jobs');
    fill($('dead-table').tBodies[0], (deadJobs || []).map((j) => {
      const err = j.status.last_error;
      return h('tr', { 'data-job': String(j.job.id) },
        h('td', { class: 'mono' }, j.job.id), h('td', {}, j.status.reason || '–'), h('td', {}, j.status.attempts),
        h('td', { class: 'mono' }, err ? `${err.uri}${err.message ? ': ' + err.message : ''}` : '–'),
        h('td', {}, time(j.status.at_ms)), h('td', { class: 'mono args', title: args(j) }, args(j)),
        h('td', {}, h('button', { type: 'button', class: 'requeue', onclick: () => requeue(q, { jobs: [j.job.id] }) }, 'Requeue')));
    }), 7, 'no dead letters');
  }

  async function requeue(q, kwargs) {
    try {
      const { kwargs: r } = await state.session.call('switchyard.queue.requeue', [q], kwargs);
      $('queue-message').textContent = `requeued ${r.requeued} job(s)`;
      await refreshQueues();
      await refreshQueueDetail();
    } catch (e) { showError('app-error', e); }
  }

  async function purge(which) {
    const q = state.selectedQueue;
    try {
      const { kwargs: r } = await state.session.call('switchyard.queue.purge', [q], { which });
      $('queue-message').textContent = `purged ${r.purged} job(s)`;
      await refreshQueues();
      await refreshQueueDetail();
    } catch (e) { showError('app-error', e); }
  }

  // ---------------------------------------------------------------- views ---
  function showView(view) {
    state.view = view;
    for (const b of document.querySelectorAll('#tabs button')) b.classList.toggle('active', b.dataset.view === view);
    for (const v of document.querySelectorAll('.view')) v.hidden = v.id !== `view-${view}`;
  }

  async function init() {
    for (const b of document.querySelectorAll('#tabs button')) b.addEventListener('click', () => showView(b.dataset.view));
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', logout);
    twoClick($('requeue-all'), 'Requeue all dead', () => requeue(state.selectedQueue, { all: true }));
    twoClick($('purge-dead'), 'Purge dead', () => purge('dead'));
    twoClick($('purge-ready'), 'Purge waiting', () => purge('ready'));
    $('authmethod').addEventListener('change', () => { $('secret').disabled = $('authmethod').value === 'anonymous'; });
    try {
      const r = await fetch('config.json', { cache: 'no-store' });
      state.cfg = await r.json();
      $('login-realm').textContent = state.cfg.realm;
      $('login-role').textContent = state.cfg.role;
    } catch (e) {
      showError('login-error', `cannot read the page's configuration (config.json): ${e.message}`);
    }
  }

  document.addEventListener('DOMContentLoaded', init);
})();
