// The chipfleet dashboard (served by chip-service at /dashboard/app.js; no build step).
//
// - The tenant API token is typed into a password field and kept in memory (in this tab's
//   sessionStorage only when the user asks). It is sent only in the Authorization header of
//   this page's own requests to this service, never in a URL.
// - The chips are read from GET /v1/chips and kept up to date from the event stream
//   GET /v1/events. A browser's built-in SSE client cannot send an Authorization header, so the
//   stream is read with fetch() and a ReadableStream, parsed here (id:, event:, data: lines),
//   and resumed with a Last-Event-ID header after a drop.
// - A chip awaiting a QR login shows its QR code: the PNG is fetched with the header, turned
//   into a blob: URL and replaced on every qr_available event and every few seconds while
//   the window is open (WAHA refreshes the code). A pairing-code chip shows its code.
// - Everything the page shows comes from the API, which never answers a webhook HMAC key or
//   a container API key. Text is always inserted as text, never as HTML.
'use strict';

(() => {
  const STORAGE_KEY = 'chipfleet.dashboard.token';
  const QR_REFRESH_MS = 5000;
  const RETRY_MS = 1000;
  const MAX_EVENTS = 40;

  const state = {
    token: null,
    generation: 0,
    chips: new Map(), // chip id -> the API's chip view
    ui: new Map(), // chip id -> the card's elements and login state
    lastEventId: null,
    stream: null, // the AbortController of the open stream
    refetch: new Map(), // chip id -> pending refetch timer
    sendAttempt: null, // {key, fingerprint} of a send to retry with the same key
    lastSend: null, // {chip, messageId}
  };

  const $ = (id) => document.getElementById(id);

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [key, value] of Object.entries(props)) {
        if (value === undefined || value === null) continue;
        if (key === 'text') node.textContent = value;
        else if (key === 'className') node.className = value;
        else if (key.startsWith('data-') || key === 'role') node.setAttribute(key, value);
        else node[key] = value;
      }
    }
    for (const child of children || []) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function uuid() {
    if (window.crypto && typeof window.crypto.randomUUID === 'function') {
      return window.crypto.randomUUID();
    }
    // Outside a secure context randomUUID is missing; getRandomValues is not.
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function tenantOf(token) {
    const match = /^cft_([a-z0-9-]+)_[0-9a-f]{64}$/.exec(token);
    return match ? match[1] : null;
  }

  function time(ms) {
    if (typeof ms !== 'number' || ms <= 0) return '';
    return new Date(ms).toLocaleTimeString();
  }

  function chipPath(id, rest) {
    return `/v1/chips/${encodeURIComponent(id)}${rest || ''}`;
  }

  function setResult(node, status, text) {
    node.dataset.status = status;
    node.textContent = text;
  }

  // --- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function authHeaders(extra) {
    return Object.assign({ Authorization: `Bearer ${state.token}` }, extra || {});
  }

  async function request(method, path, options) {
    const opts = options || {};
    const headers = authHeaders(Object.assign({ Accept: 'application/json' }, opts.headers || {}));
    let body;
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(opts.body);
    }
    const gen = state.generation;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body,
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (error) {
      throw new ApiError(0, 'network', `the service did not answer (${error.message})`);
    }
    if (response.status === 401 && gen === state.generation && state.token !== null) {
      refused();
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        error.code || `http_${response.status}`,
        error.message || `HTTP ${response.status}`,
      );
    }
    return { status: response.status, data };
  }

  // --- connecting ----------------------------------------------------------------------------

  function showLogin(message) {
    document.body.dataset.state = 'signed-out';
    $('app').hidden = true;
    $('login').hidden = false;
    $('sign-out').hidden = true;
    $('tenant-label').textContent = '';
    const error = $('login-error');
    error.hidden = !message;
    error.textContent = message || '';
    $('token').focus();
  }

  function showApp() {
    document.body.dataset.state = 'connected';
    $('login').hidden = true;
    $('app').hidden = false;
    $('sign-out').hidden = false;
    const tenant = tenantOf(state.token);
    $('tenant-label').textContent = tenant ? `tenant ${tenant}` : '';
  }

  function setStream(value) {
    document.body.dataset.stream = value;
    const pill = $('stream-state');
    pill.dataset.state = value;
    pill.textContent = {
      live: 'live',
      connecting: 'connecting…',
      reconnecting: 'reconnecting…',
      closed: 'offline',
    }[value] || value;
  }

  function forget() {
    state.generation += 1;
    if (state.stream) state.stream.abort();
    state.stream = null;
    state.token = null;
    state.lastEventId = null;
    state.sendAttempt = null;
    state.lastSend = null;
    for (const timer of state.refetch.values()) clearTimeout(timer);
    state.refetch.clear();
    for (const id of Array.from(state.ui.keys())) removeCard(id);
    state.chips.clear();
    renderCount();
    $('events').replaceChildren();
    $('create-result').textContent = '';
    $('send-result').textContent = '';
    renderSendChoices();
    setStream('closed');
    try {
      window.sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      // storage disabled: nothing kept
    }
  }

  function refused() {
    forget();
    showLogin('The token was refused (wrong, rotated, or the tenant is gone). Enter the current one.');
  }

  async function connect(token, remember) {
    forget();
    state.token = token;
    const gen = state.generation;
    $('connect').disabled = true;
    try {
      await loadChips();
    } catch (error) {
      if (gen !== state.generation) return;
      const message = error.status === 401
        ? 'The token was refused.'
        : `Could not list the chips: ${error.message}`;
      forget();
      showLogin(message);
      return;
    } finally {
      $('connect').disabled = false;
    }
    if (gen !== state.generation) return;
    if (remember) {
      try {
        window.sessionStorage.setItem(STORAGE_KEY, token);
      } catch (_) {
        // storage disabled: kept in memory only
      }
    }
    $('token').value = '';
    showApp();
    streamLoop(gen);
  }

  // --- chips ---------------------------------------------------------------------------------

  async function loadChips() {
    const gen = state.generation;
    const all = [];
    let after = null;
    for (;;) {
      const query = after === null ? '?limit=500' : `?limit=500&after=${encodeURIComponent(after)}`;
      const { data } = await request('GET', `/v1/chips${query}`);
      all.push(...data.chips);
      if (!data.next_after) break;
      after = data.next_after;
    }
    if (gen !== state.generation) return;
    const seen = new Set();
    for (const chip of all) {
      seen.add(chip.id);
      upsert(chip);
    }
    for (const id of Array.from(state.chips.keys())) {
      if (!seen.has(id)) removeChip(id);
    }
  }

  function upsert(chip) {
    state.chips.set(chip.id, chip);
    renderChip(chip.id);
  }

  function removeChip(id) {
    state.chips.delete(id);
    const timer = state.refetch.get(id);
    if (timer) clearTimeout(timer);
    state.refetch.delete(id);
    removeCard(id);
    renderCount();
    renderSendChoices();
  }

  function scheduleRefetch(id) {
    if (state.refetch.has(id)) return;
    const gen = state.generation;
    state.refetch.set(id, setTimeout(async () => {
      state.refetch.delete(id);
      if (gen !== state.generation) return;
      try {
        const { data } = await request('GET', chipPath(id));
        if (gen === state.generation) upsert(data);
      } catch (error) {
        if (gen !== state.generation) return;
        if (error.status === 404) removeChip(id);
        else if (error.status !== 401) scheduleRetry(id);
      }
    }, 120));
  }

  function scheduleRetry(id) {
    const gen = state.generation;
    setTimeout(() => {
      if (gen === state.generation) scheduleRefetch(id);
    }, RETRY_MS * 2);
  }

  // --- rendering -----------------------------------------------------------------------------

  function renderCount() {
    const count = state.chips.size;
    $('chip-count').textContent = count ? `(${count})` : '';
    $('empty').hidden = count > 0;
  }

  function renderSendChoices() {
    const select = $('send-chip');
    const previous = select.value;
    const ids = Array.from(state.chips.keys()).sort();
    const labels = ids.map((id) => {
      const chip = state.chips.get(id);
      return chip.phase === 'working' ? id : `${id} (${chip.phase.replace('_', ' ')})`;
    });
    const key = JSON.stringify([ids, labels]);
    if (select.dataset.key === key) return;
    select.dataset.key = key;
    select.replaceChildren(...ids.map((id, i) => el('option', { value: id, text: labels[i] })));
    if (ids.includes(previous)) {
      select.value = previous;
    } else {
      const working = ids.find((id) => state.chips.get(id).phase === 'working');
      if (working) select.value = working;
    }
  }

  function card(id) {
    let ui = state.ui.get(id);
    if (ui) return ui;
    const title = el('h3', { text: id });
    const phase = el('span', { className: 'phase' });
    const fields = el('dl');
    const login = el('div', { className: 'login-box' });
    const note = el('p', { className: 'note', role: 'status' });
    const actions = el('div', { className: 'actions' });
    const root = el('article', { className: 'chip', 'data-chip': id }, [
      el('header', null, [title, phase]),
      fields,
      login,
      actions,
      note,
    ]);
    ui = {
      root, phase, fields, login, note, actions,
      qrImg: null, qrUrl: null, qrTimer: null, qrBusy: false, qrRetry: null,
      pairing: null, pairingBusy: false, pairingStale: false,
      actionsKey: '',
    };
    state.ui.set(id, ui);
    // Keep the cards in id order.
    const container = $('chips');
    const next = Array.from(container.children).find((node) => node.dataset.chip > id);
    container.insertBefore(root, next || null);
    return ui;
  }

  function removeCard(id) {
    const ui = state.ui.get(id);
    if (!ui) return;
    clearQr(ui);
    clearPairing(ui);
    ui.root.remove();
    state.ui.delete(id);
  }

  function field(name, value, className) {
    return [el('dt', { text: name }), el('dd', { text: value || '—', className })];
  }

  function errorText(error) {
    if (!error) return null;
    let text = error.reason || 'error';
    if (error.kind) text += ` (${error.kind})`;
    if (error.attempt) text += ` · attempt ${error.attempt}`;
    if (error.at_ms) text += ` · ${time(error.at_ms)}`;
    if (error.detail) {
      const detail = String(error.detail);
      text += ` · ${detail.length > 160 ? `${detail.slice(0, 160)}…` : detail}`;
    }
    return text;
  }

  function renderChip(id) {
    const chip = state.chips.get(id);
    if (!chip) return;
    const ui = card(id);
    ui.root.dataset.phase = chip.phase;
    ui.root.dataset.desired = chip.desired;
    ui.phase.dataset.phase = chip.phase;
    ui.phase.textContent = chip.phase.replace('_', ' ');
    const account = chip.account ? (chip.account.push_name || chip.account.id) : null;
    const lastError = errorText(chip.last_error);
    ui.fields.replaceChildren(
      ...field('Phone', chip.phone),
      ...field('Proxy country', chip.proxy_country),
      ...field('Login', chip.login === 'pairing_code' ? 'pairing code' : 'QR code'),
      ...field('Desired', chip.desired),
      ...(account ? field('Account', account) : []),
      ...field('Last error', lastError, lastError ? 'bad' : undefined),
    );
    renderActions(id, chip, ui);
    renderLogin(id);
    renderCount();
    renderSendChoices();
  }

  function renderActions(id, chip, ui) {
    const key = `${chip.desired}`;
    if (ui.actionsKey === key) return;
    ui.actionsKey = key;
    const buttons = [];
    if (chip.desired === 'stopped') buttons.push(actionButton(id, 'start', 'Start', 'plain'));
    if (chip.desired === 'running') buttons.push(actionButton(id, 'stop', 'Stop', 'plain'));
    if (chip.desired !== 'deleted') {
      buttons.push(actionButton(id, 'restart', 'Restart', 'plain'));
      buttons.push(actionButton(id, 'logout', 'Log out', 'plain'));
      buttons.push(actionButton(id, 'delete', 'Delete', 'danger'));
    }
    ui.actions.replaceChildren(...buttons);
  }

  function actionButton(id, action, label, className) {
    const button = el('button', { type: 'button', className, text: label, 'data-action': action });
    button.addEventListener('click', () => runAction(id, action, button));
    return button;
  }

  async function runAction(id, action, button) {
    const ui = state.ui.get(id);
    if (!ui) return;
    if (action === 'delete' && !window.confirm(`Delete chip ${id}? Its session is logged out and deleted.`)) return;
    if (action === 'logout' && !window.confirm(`Log chip ${id} out? It needs a new QR scan or pairing code.`)) return;
    button.disabled = true;
    setResult(ui.note, 'busy', `${action}…`);
    try {
      const { data } = action === 'delete'
        ? await request('DELETE', chipPath(id))
        : await request('POST', chipPath(id, `/${action}`));
      setResult(ui.note, 'ok', `${action}: done`);
      if (data && data.id) upsert(data);
    } catch (error) {
      setResult(ui.note, 'error', `${action}: ${error.message}`);
    } finally {
      button.disabled = false;
    }
  }

  // --- the login offer: QR code or pairing code -----------------------------------------------

  function wantsQr(chip) {
    return Boolean(chip && chip.phase === 'awaiting_login' && chip.login_offer
      && chip.login_offer.kind === 'qr');
  }

  function wantsPairing(chip) {
    return Boolean(chip && chip.phase === 'awaiting_login' && chip.login_offer
      && chip.login_offer.kind === 'pairing_code' && chip.login_offer.code_available);
  }

  function renderLogin(id) {
    const chip = state.chips.get(id);
    const ui = state.ui.get(id);
    if (!chip || !ui) return;
    if (wantsQr(chip)) {
      clearPairing(ui);
      if (!ui.qrImg) {
        ui.login.replaceChildren(el('p', { className: 'waiting', text: 'Fetching the QR code…' }));
        fetchQr(id);
      }
      if (!ui.qrTimer) {
        const gen = state.generation;
        ui.qrTimer = setInterval(() => {
          if (gen === state.generation) fetchQr(id);
        }, QR_REFRESH_MS);
      }
      ui.root.dataset.login = 'qr';
    } else if (wantsPairing(chip)) {
      clearQr(ui);
      if (!ui.pairing || ui.pairingStale) fetchPairing(id);
      ui.root.dataset.login = 'pairing_code';
    } else {
      clearQr(ui);
      clearPairing(ui);
      if (chip.phase === 'awaiting_login') {
        ui.login.replaceChildren(el('p', { className: 'waiting', text: 'Waiting for the login offer…' }));
      } else {
        ui.login.replaceChildren();
      }
      delete ui.root.dataset.login;
    }
  }

  function clearQr(ui) {
    if (ui.qrTimer) clearInterval(ui.qrTimer);
    if (ui.qrRetry) clearTimeout(ui.qrRetry);
    ui.qrTimer = null;
    ui.qrRetry = null;
    if (ui.qrImg) ui.qrImg.remove();
    ui.qrImg = null;
    if (ui.qrUrl) URL.revokeObjectURL(ui.qrUrl);
    ui.qrUrl = null;
    delete ui.root.dataset.qr;
  }

  function clearPairing(ui) {
    if (ui.pairing) ui.login.replaceChildren();
    ui.pairing = null;
    ui.pairingStale = false;
  }

  async function fetchQr(id) {
    const ui = state.ui.get(id);
    if (!ui || ui.qrBusy) return;
    const gen = state.generation;
    ui.qrBusy = true;
    try {
      let response;
      try {
        response = await fetch(chipPath(id, '/qr'), {
          headers: authHeaders({ Accept: 'image/png' }),
          cache: 'no-store',
          credentials: 'omit',
          referrerPolicy: 'no-referrer',
        });
      } catch (_) {
        response = null;
      }
      if (gen !== state.generation || state.ui.get(id) !== ui) return;
      if (response && response.status === 401) {
        refused();
        return;
      }
      if (!response || !response.ok) {
        // 409 not_ready: the window is opening or closing; try again soon while it is wanted.
        if (!ui.qrRetry) {
          ui.qrRetry = setTimeout(() => {
            ui.qrRetry = null;
            if (gen === state.generation && wantsQr(state.chips.get(id))) fetchQr(id);
          }, RETRY_MS);
        }
        return;
      }
      const blob = await response.blob();
      if (gen !== state.generation || state.ui.get(id) !== ui || !wantsQr(state.chips.get(id))) return;
      const url = URL.createObjectURL(blob);
      const previous = ui.qrUrl;
      if (!ui.qrImg) {
        ui.qrImg = el('img', { className: 'qr', alt: `QR code to scan for chip ${id}` });
        ui.login.replaceChildren(
          ui.qrImg,
          el('p', { className: 'waiting', text: 'Scan with WhatsApp: Linked devices, Link a device.' }),
        );
      }
      const img = ui.qrImg;
      img.addEventListener('load', () => {
        if (previous) URL.revokeObjectURL(previous);
      }, { once: true });
      img.src = url;
      ui.qrUrl = url;
      ui.root.dataset.qr = 'shown';
    } finally {
      ui.qrBusy = false;
    }
  }

  async function fetchPairing(id) {
    const ui = state.ui.get(id);
    if (!ui || ui.pairingBusy) return;
    const gen = state.generation;
    ui.pairingBusy = true;
    try {
      const { data } = await request('GET', chipPath(id, '/pairing-code'));
      if (gen !== state.generation || state.ui.get(id) !== ui || !wantsPairing(state.chips.get(id))) return;
      ui.pairing = data;
      ui.pairingStale = false;
      const expires = data.expires_at_ms ? `expires at ${time(data.expires_at_ms)}` : '';
      ui.login.replaceChildren(
        el('div', { className: 'pairing-code', text: data.code }),
        el('p', { className: 'waiting', text: `Type it on the phone: Linked devices, Link with phone number. ${expires}` }),
      );
    } catch (error) {
      if (gen !== state.generation || state.ui.get(id) !== ui) return;
      if (error.status !== 401) {
        setTimeout(() => {
          if (gen === state.generation && wantsPairing(state.chips.get(id))) fetchPairing(id);
        }, RETRY_MS);
      }
    } finally {
      ui.pairingBusy = false;
    }
  }

  // --- the event stream ----------------------------------------------------------------------

  async function streamLoop(gen) {
    let backoff = 500;
    let resumeRefused = false;
    while (gen === state.generation) {
      const controller = new AbortController();
      state.stream = controller;
      let opened = false;
      try {
        const headers = authHeaders({ Accept: 'text/event-stream' });
        if (state.lastEventId !== null && !resumeRefused) headers['Last-Event-ID'] = state.lastEventId;
        setStream(state.lastEventId === null ? 'connecting' : 'reconnecting');
        const response = await fetch('/v1/events', {
          headers,
          cache: 'no-store',
          credentials: 'omit',
          referrerPolicy: 'no-referrer',
          signal: controller.signal,
        });
        if (gen !== state.generation) return;
        if (response.status === 401) {
          refused();
          return;
        }
        if (response.status === 400 && headers['Last-Event-ID'] !== undefined) {
          // The resume point was refused: start afresh and re-read the chips.
          resumeRefused = true;
          state.lastEventId = null;
          continue;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        opened = true;
        resumeRefused = false;
        backoff = 500;
        setStream('live');
        // Without a resume point the stream starts with the next change: re-read the chips
        // now that it is subscribed, so nothing between the two is missed.
        if (state.lastEventId === null) loadChips().catch(() => {});
        await readStream(response.body, gen);
      } catch (_) {
        // dropped, refused or aborted: reconnect below unless signed out
      }
      if (gen !== state.generation) return;
      setStream('reconnecting');
      await sleep((opened ? 250 : backoff) + Math.random() * 250);
      if (!opened) backoff = Math.min(backoff * 2, 10000);
    }
  }

  async function readStream(body, gen) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    // The last event id buffer starts from where the stream resumed (the SSE format).
    let event = { type: '', data: [], id: state.lastEventId };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        if (gen !== state.generation) return;
        buffer += decoder.decode(value, { stream: true });
        // A line ends at CRLF, LF or CR; a CR at the very end may be the first half of a CRLF.
        let at;
        while ((at = buffer.search(/\r\n|\n|\r(?=[^\n])/)) >= 0) {
          const line = buffer.slice(0, at);
          buffer = buffer.slice(at + (buffer.startsWith('\r\n', at) ? 2 : 1));
          event = sseLine(line, event);
        }
      }
    } finally {
      try {
        reader.releaseLock();
      } catch (_) {
        // already released
      }
    }
  }

  // One line of the stream (the SSE format): fields accumulate, an empty line dispatches.
  // The id buffer carries over from event to event; it becomes the resume point (what a
  // reconnect sends as Last-Event-ID) when an event is dispatched.
  function sseLine(line, event) {
    if (line === '') {
      dispatch(event);
      return { type: '', data: [], id: event.id };
    }
    if (line.startsWith(':')) return event; // a comment: the keep-alive
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') event.type = value;
    else if (name === 'data') event.data.push(value);
    else if (name === 'id' && !value.includes('\u0000')) event.id = value === '' ? null : value;
    return event;
  }

  function dispatch(event) {
    state.lastEventId = event.id;
    if (event.data.length === 0) return;
    let data;
    try {
      data = JSON.parse(event.data.join('\n'));
    } catch (_) {
      return;
    }
    const type = event.type || 'message';
    if (type === 'change') onChange(data);
    else if (type === 'gap') onGap(data);
  }

  function onGap(gap) {
    logEvent({ at_ms: Date.now(), chip: '—', kind: `gap: ${gap.missed} missed`, phase: '' });
    if (gap.resume_after !== undefined && gap.resume_after !== null) {
      state.lastEventId = String(gap.resume_after);
    }
    loadChips().catch(() => {});
  }

  function onChange(change) {
    logEvent(change);
    const id = change.chip;
    if (!id) return;
    if (change.kind === 'deleted') {
      removeChip(id);
      return;
    }
    const chip = state.chips.get(id);
    const ui = state.ui.get(id);
    if (chip && change.phase && chip.phase !== change.phase) {
      chip.phase = change.phase;
      renderChip(id);
    }
    if (ui && change.kind === 'pairing_code') ui.pairingStale = true;
    if (ui && change.kind === 'qr_available' && ui.qrImg) fetchQr(id);
    if (change.kind === 'message_status' || change.kind === 'send_failed') onMessageEvent(change);
    if (change.kind === 'message_received' || change.kind === 'message_status') return;
    scheduleRefetch(id);
  }

  function logEvent(change) {
    const list = $('events');
    const detail = [change.kind];
    if (change.kind === 'phase_changed' && change.from) detail.push(`${change.from} → ${change.to}`);
    if (change.reason) detail.push(change.reason);
    if (change.ack) detail.push(`ack ${change.ack}`);
    const item = el('li', { 'data-kind': change.kind }, [
      el('span', { className: 'at', text: time(change.at_ms) }),
      el('span', { className: 'chip-id', text: change.chip || '' }),
      el('span', { className: 'kind', text: detail.join(' · ') }),
    ]);
    list.prepend(item);
    while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  }

  // --- forms ---------------------------------------------------------------------------------

  async function createChip() {
    const result = $('create-result');
    const body = { login: $('new-login').value };
    const id = $('new-id').value.trim();
    const phone = $('new-phone').value.trim();
    const country = $('new-country').value.trim().toUpperCase();
    if (id) body.id = id;
    if (phone) body.phone = phone;
    if (country) body.proxy_country = country;
    $('create').disabled = true;
    setResult(result, 'busy', 'Creating…');
    try {
      const { data } = await request('POST', '/v1/chips', { body });
      upsert(data);
      setResult(result, 'ok', `Created chip ${data.id}.`);
      $('new-id').value = '';
    } catch (error) {
      setResult(result, 'error', error.message);
    } finally {
      $('create').disabled = false;
    }
  }

  function chatId(text) {
    const trimmed = text.trim();
    if (/^\+?[0-9]{5,15}$/.test(trimmed)) return `${trimmed.replace('+', '')}@c.us`;
    return trimmed;
  }

  async function sendTest() {
    const result = $('send-result');
    const chip = $('send-chip').value;
    const chat = chatId($('send-chat').value);
    const text = $('send-text').value;
    if (!chip) {
      setResult(result, 'error', 'Create a chip first.');
      return;
    }
    if (!chat || !text) {
      setResult(result, 'error', 'A chat and a text are needed.');
      return;
    }
    // A retry of the same send (after a network error or a 5xx) reuses its key, so it is
    // sent at most once; anything else gets a fresh key.
    const fingerprint = JSON.stringify([chip, chat, text]);
    if (!state.sendAttempt || state.sendAttempt.fingerprint !== fingerprint) {
      state.sendAttempt = { key: uuid(), fingerprint };
    }
    const key = state.sendAttempt.key;
    $('send').disabled = true;
    setResult(result, 'busy', 'Sending (paced)…');
    try {
      const { data } = await request('POST', chipPath(chip, '/messages'), {
        headers: { 'Idempotency-Key': key },
        body: { chat, text, max_wait_ms: 30000 },
      });
      state.sendAttempt = null;
      state.lastSend = { chip, messageId: data.message_id };
      const parts = [`Sent from ${chip}: ${data.status}`];
      if (data.ack) parts.push(`ack ${data.ack}`);
      if (data.message_id) parts.push(`message ${data.message_id}`);
      if (data.replayed) parts.push('(replayed: not sent again)');
      result.dataset.messageId = data.message_id || '';
      setResult(result, data.status === 'failed' ? 'error' : data.status, parts.join(' · '));
    } catch (error) {
      if (error.status !== 0 && error.status < 500) state.sendAttempt = null;
      setResult(result, 'error', `${error.message}${state.sendAttempt ? ' (Send again retries with the same key.)' : ''}`);
    } finally {
      $('send').disabled = false;
    }
  }

  function onMessageEvent(change) {
    const last = state.lastSend;
    if (!last || !change.message_id || change.message_id !== last.messageId) return;
    const result = $('send-result');
    if (change.kind === 'message_status' && change.ack) {
      result.dataset.ack = change.ack;
      setResult(result, result.dataset.status || 'sent', `Sent from ${last.chip} · ack ${change.ack} · message ${last.messageId}`);
    }
  }

  // --- start -------------------------------------------------------------------------------------

  function start() {
    setStream('closed');
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token').value.trim();
      if (!token) return;
      connect(token, $('remember').checked);
    });
    $('create-form').addEventListener('submit', (event) => {
      event.preventDefault();
      createChip();
    });
    $('send-form').addEventListener('submit', (event) => {
      event.preventDefault();
      sendTest();
    });
    $('sign-out').addEventListener('click', () => {
      forget();
      showLogin('');
    });
    let kept = null;
    try {
      kept = window.sessionStorage.getItem(STORAGE_KEY);
    } catch (_) {
      kept = null;
    }
    if (kept) {
      $('remember').checked = true;
      connect(kept, true);
    } else {
      showLogin('');
    }
  }

  start();
})();
