// wagate dashboard: sign-in, sessions with live status, pairing, groups and the actor tree.
'use strict';

const API = '/api/v1';
const TOKEN_KEY = 'wagate.admin-token';
const ACTORS_EVERY_MS = 5000;
const SESSIONS_EVERY_MS = 10000;
const QR_EVERY_MS = 2000;
const STREAM_MIN_DELAY_MS = 1000;
const STREAM_MAX_DELAY_MS = 10000;
// Statuses on the way to a QR or a login: worth polling for when the stream is down.
const TRANSITIONAL = new Set(['connecting', 'connected', 'waiting_for_pair_code']);

const state = {
  token: null,
  sessions: new Map(), // id -> session object, in the server's order
  selected: null, // id of the session shown in the pane
  timers: [],
  stream: null, // AbortController of the open event stream
  streamKey: null, // the session ids the stream was opened for
  streamLive: false,
  streamOpenedAt: 0,
  streamDelay: STREAM_MIN_DELAY_MS,
  streamRetry: null,
  qrCode: null, // qr_codes[0] of the PNG on screen
  qrUrl: null, // its blob: URL, revoked when replaced
};

const $ = (id) => document.getElementById(id);

// ---- DOM helpers -------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setText(id, text) {
  $(id).textContent = text || '';
}

function badge(node, status) {
  node.textContent = status || 'unknown';
  node.className = 'status status-' + (status || 'unknown');
  return node;
}

function formatTime(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : '';
}

// ---- API ----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Options: `body` (sent as JSON), `token` (defaults to the signed-in one), `signal`.
async function send(method, path, { body, token = state.token, signal } = {}) {
  const headers = { Authorization: 'Bearer ' + token };
  const init = { method, headers, cache: 'no-store', signal };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(API + path, init);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError(0, 'network', 'Cannot reach the server.');
  }
  if (!res.ok) throw await errorFrom(res, token);
  return res;
}

// Turns an error response into an ApiError carrying the server's own message.
async function errorFrom(res, token) {
  let body = {};
  try {
    body = await res.json();
  } catch (_) {
    // Not JSON: fall back to the HTTP status below.
  }
  if (res.status === 401 && state.token && token === state.token) {
    signOut('The token is no longer accepted. Sign in again.');
  }
  return new ApiError(res.status, body.error || 'http_' + res.status,
    body.message || 'The server answered HTTP ' + res.status + '.');
}

async function api(method, path, options) {
  const res = await send(method, path, options);
  try {
    return await res.json();
  } catch (_) {
    return {};
  }
}

const sessionPath = (id, rest = '') => '/sessions/' + encodeURIComponent(id) + rest;

// ---- Sign in / out ------------------------------------------------------

async function signIn(token) {
  setText('sign-in-error', '');
  $('sign-in').disabled = true;
  try {
    const body = await api('GET', '/admin/actors', { token });
    if (state.token) return; // a second attempt already signed in
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token').value = '';
    showSignedIn(true);
    renderActors(body.actors || []);
    startBackground();
  } catch (err) {
    if (err.status === 401 || err.status === 403) sessionStorage.removeItem(TOKEN_KEY);
    setText('sign-in-error', err.message);
  } finally {
    $('sign-in').disabled = false;
  }
}

function signOut(message) {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.timers.forEach(clearInterval);
  state.timers = [];
  stopStream();
  state.streamKey = null;
  state.sessions.clear();
  selectSession(null);
  $('sessions').replaceChildren();
  $('actor-tree').replaceChildren();
  ['sessions-error', 'create-error', 'actors-error'].forEach((id) => setText(id, ''));
  showSignedIn(false);
  setText('sign-in-error', message || '');
}

function showSignedIn(on) {
  $('sign-in-view').hidden = on;
  $('app').hidden = !on;
  $('sign-out').hidden = !on;
  $('stream-status').hidden = !on;
}

// Runs a task now and then every `ms`, never two at once (slow servers must not pile up).
// Tasks report their own errors in the page and never reject.
function every(ms, task) {
  let busy = false;
  const tick = () => {
    if (busy || !state.token) return;
    busy = true;
    task().finally(() => { busy = false; });
  };
  tick();
  state.timers.push(setInterval(tick, ms));
}

function startBackground() {
  every(SESSIONS_EVERY_MS, loadSessions);
  every(ACTORS_EVERY_MS, loadActors);
  every(QR_EVERY_MS, pairingTick);
}

// ---- Sessions list ------------------------------------------------------

async function loadSessions() {
  try {
    const body = await api('GET', '/sessions');
    if (!state.token) return;
    setText('sessions-error', '');
    replaceSessions(body.sessions || []);
  } catch (err) {
    if (state.token) setText('sessions-error', 'Could not load sessions: ' + err.message);
  }
}

function replaceSessions(list) {
  const previous = state.sessions;
  state.sessions = new Map(list.map((s) => [s.id, s]));
  renderSessionList();
  if (state.selected && !state.sessions.has(state.selected)) {
    selectSession(null);
  } else if (state.selected) {
    const before = previous.get(state.selected);
    selectedChanged(before ? before.status : null);
  }
  syncStream();
}

// Stores one session (from an action's or create's answer) and redraws what shows it.
function putSession(session) {
  const before = state.sessions.get(session.id);
  state.sessions.set(session.id, session);
  renderSessionList();
  if (session.id === state.selected) selectedChanged(before ? before.status : null);
}

function setStatus(id, status) {
  const session = state.sessions.get(id);
  if (!session || !status || session.status === status) return;
  putSession({ ...session, status, is_logged_in: status === 'logged_in' });
  // A login also brings the phone number and push name: fetch the whole record.
  if (status === 'logged_in') refreshSession(id).catch(() => { /* the list refresh retries */ });
}

function renderSessionList() {
  const list = $('sessions');
  const rows = new Map([...list.children].map((row) => [row.dataset.session, row]));
  for (const session of state.sessions.values()) {
    const row = rows.get(session.id) || sessionRow(session.id);
    rows.delete(session.id);
    fillSessionRow(row, session);
    list.appendChild(row); // appending an existing node moves it: keeps the server's order
  }
  rows.forEach((row) => row.remove());
  $('sessions-empty').hidden = state.sessions.size > 0;
}

function sessionRow(id) {
  const row = el('li', 'session-row');
  row.dataset.session = id;
  const open = el('button', 'session-open');
  open.type = 'button';
  open.append(el('span', 'session-name'), el('span', 'session-sub muted'));
  row.append(open, el('span', 'status'));
  row.addEventListener('click', () => selectSession(id));
  return row;
}

function fillSessionRow(row, session) {
  row.querySelector('.session-name').textContent = session.name || session.id;
  const phone = session.phone_number ? '+' + session.phone_number : 'no phone linked';
  row.querySelector('.session-sub').textContent =
    (session.name ? session.id + ' · ' : '') + phone;
  badge(row.querySelector('.status'), session.status);
  const selected = session.id === state.selected;
  row.classList.toggle('selected', selected);
  if (selected) row.setAttribute('aria-current', 'true');
  else row.removeAttribute('aria-current');
}

async function createSession() {
  setText('create-error', '');
  const body = {};
  const id = $('new-session-id').value.trim();
  const name = $('new-session-name').value.trim();
  if (id) body.id = id;
  if (name) body.name = name;
  $('create-session').disabled = true;
  try {
    const reply = await api('POST', '/sessions', { body });
    $('create-form').reset();
    putSession(reply.session);
    selectSession(reply.session.id);
    syncStream();
  } catch (err) {
    setText('create-error', err.message);
  } finally {
    $('create-session').disabled = false;
  }
}

// ---- Selected session pane ----------------------------------------------

const selectedSession = () => state.sessions.get(state.selected) || null;

function selectSession(id) {
  if (id === state.selected) return;
  state.selected = id;
  clearQr();
  showDeleteConfirm(false);
  setText('session-error', '');
  setText('pair-code', '');
  $('pair-code-line').hidden = true;
  $('pair-form').reset();
  $('groups').hidden = true;
  $('groups').tBodies[0].replaceChildren(); // never show one session's groups under another
  renderSessionList();
  selectedChanged(null);
}

// Redraws the pane; `previous` is the status shown before, so work starts on a change.
function selectedChanged(previous) {
  const session = selectedSession();
  $('session').hidden = !session;
  $('no-selection').hidden = !!session;
  if (!session) return;

  const status = session.status;
  setText('session-id', session.id);
  badge($('session-status'), status);
  const meta = [session.name, session.push_name,
    session.phone_number && '+' + session.phone_number].filter(Boolean);
  setText('session-meta', meta.join(' · ') || 'Not linked to a phone yet.');

  $('pairing').hidden = status === 'logged_in';
  if (status !== 'waiting_for_qr') clearQr();
  if (status === 'logged_in') {
    setText('pair-code', '');
    $('pair-code-line').hidden = true;
  }
  setQrNote(status);

  if (status === previous) return;
  if (status === 'waiting_for_qr') refreshQr();
  loadGroups();
}

function setQrNote(status) {
  const notes = {
    waiting_for_qr: state.qrUrl
      ? 'Scan with WhatsApp on the phone: Linked devices → Link a device.'
      : 'Fetching the QR code…',
    waiting_for_pair_code: 'Waiting for the pairing code to be entered on the phone.',
    connecting: 'Connecting… a QR code appears here shortly.',
    connected: 'Connected, finishing the login…',
  };
  setText('qr-note', notes[status] ||
    (status === 'logged_in' ? '' : 'Press Connect to start linking a phone.'));
}

// Runs a button's action with the button disabled; errors go to #session-error.
async function sessionAction(button, work) {
  const id = state.selected;
  if (!id) return;
  setText('session-error', '');
  button.disabled = true;
  try {
    await work(id);
  } catch (err) {
    if (state.selected === id) setText('session-error', err.message);
  } finally {
    button.disabled = false;
  }
}

function postAction(name) {
  return (id) => api('POST', sessionPath(id, '/' + name)).then((reply) => {
    if (reply.status) setStatus(id, reply.status);
    return refreshSession(id);
  });
}

async function refreshSession(id) {
  const session = await api('GET', sessionPath(id));
  if (state.sessions.has(id)) putSession(session);
}

async function deleteSelected(id) {
  await api('DELETE', sessionPath(id));
  state.sessions.delete(id);
  if (state.selected === id) selectSession(null);
  renderSessionList();
  syncStream();
}

function showDeleteConfirm(on) {
  $('delete').hidden = on;
  $('delete-confirm').hidden = !on;
  $('delete-cancel').hidden = !on;
}

// ---- Pairing: QR image and pair code --------------------------------------

function clearQr() {
  state.qrCode = null;
  const img = $('qr-image');
  img.hidden = true;
  img.removeAttribute('src');
  if (state.qrUrl) URL.revokeObjectURL(state.qrUrl);
  state.qrUrl = null;
}

function showQr(code, url) {
  const old = state.qrUrl;
  state.qrCode = code;
  state.qrUrl = url;
  const img = $('qr-image');
  img.src = url;
  img.hidden = false;
  if (old) URL.revokeObjectURL(old);
  setQrNote('waiting_for_qr');
}

// Every 2 s: fetch the QR while one is pending; if the live stream is down, poll the
// selected session's status instead so the pane still moves on without it.
async function pairingTick() {
  const session = selectedSession();
  if (!session) return;
  if (session.status === 'waiting_for_qr') return refreshQr();
  if (!state.streamLive && TRANSITIONAL.has(session.status)) {
    return refreshSession(session.id).catch(() => { /* the 10 s list refresh reports */ });
  }
}

let qrBusy = false;

async function refreshQr() {
  const id = state.selected;
  if (qrBusy || !id) return;
  qrBusy = true;
  try {
    const reply = await api('GET', sessionPath(id, '/qr'));
    const code = (reply.qr_codes || [])[0];
    // WhatsApp rotates the code: reload the image only when it changed.
    if (code && code !== state.qrCode && state.selected === id) {
      const res = await send('GET', sessionPath(id, '/qr?format=png'));
      const blob = await res.blob();
      const session = selectedSession();
      if (session && session.id === id && session.status === 'waiting_for_qr') {
        showQr(code, URL.createObjectURL(blob));
      }
    }
  } catch (err) {
    // 409: no QR pending any more (just scanned, or the session moved on): catch up on its
    // status now rather than ask again in 2 s.
    if (err.status === 409) {
      refreshSession(id).catch(() => { /* the list refresh retries */ });
    } else if (state.selected === id) {
      setText('session-error', 'Could not load the QR code: ' + err.message);
    }
  } finally {
    qrBusy = false;
  }
}

async function requestPairCode(id) {
  const phone = $('pair-phone').value.trim();
  const reply = await api('POST', sessionPath(id, '/pair'), { body: { phone_number: phone } });
  if (state.selected !== id) return;
  setText('pair-code', reply.code);
  $('pair-code-line').hidden = false;
  refreshSession(id).catch(() => { /* status arrives by the stream or the list refresh */ });
}

// ---- Groups ---------------------------------------------------------------

async function loadGroups() {
  const session = selectedSession();
  const table = $('groups');
  const body = table.tBodies[0];
  const note = $('groups-note');
  note.classList.remove('error');
  if (!session || session.status !== 'logged_in') {
    table.hidden = true;
    body.replaceChildren();
    note.textContent = 'Groups are listed once the session is logged in.';
    return;
  }
  const id = session.id;
  note.textContent = 'Loading groups…';
  try {
    const reply = await api('GET', sessionPath(id, '/groups'));
    if (state.selected !== id) return;
    const groups = reply.groups || [];
    body.replaceChildren(...groups.map(groupRow));
    table.hidden = groups.length === 0;
    note.textContent = groups.length ? '' : 'This account is in no groups.';
  } catch (err) {
    if (state.selected !== id) return;
    table.hidden = true;
    if (err.status === 409) {
      note.textContent = 'Not logged in yet: groups show up after linking.';
    } else {
      note.textContent = 'Could not load groups: ' + err.message;
      note.classList.add('error');
    }
  }
}

function groupRow(group) {
  const row = el('tr');
  const size = group.participant_count ?? (group.participants || []).length;
  row.append(el('td', '', group.name || '(no name)'), el('td', 'mono', group.jid || group.id),
    el('td', 'num', size));
  return row;
}

// ---- Actor tree -----------------------------------------------------------

async function loadActors() {
  try {
    const body = await api('GET', '/admin/actors');
    if (!state.token) return;
    setText('actors-error', '');
    renderActors(body.actors || []);
  } catch (err) {
    if (state.token) setText('actors-error', 'Could not load actors: ' + err.message);
  }
}

function renderActors(actors) {
  const tree = $('actor-tree');
  if (!actors.length) {
    tree.replaceChildren(el('p', 'muted', 'No actors running.'));
    return;
  }
  tree.replaceChildren(actorList(actors));
}

function actorList(nodes) {
  const list = el('ul');
  nodes.forEach((node) => list.appendChild(actorItem(node)));
  return list;
}

function actorItem(node) {
  const item = el('li', 'actor');
  if (node.last_failure) item.classList.add('has-failure');
  if (node.status === 'failed') item.classList.add('is-failed');
  const line = el('div', 'actor-line');
  line.append(el('span', 'actor-name mono', node.name), badge(el('span'), node.status),
    el('span', 'actor-restarts muted', 'restarts: ' + (node.restarts || 0)));
  if (node.last_failure) {
    const at = formatTime(node.last_failure.at);
    line.append(el('span', 'actor-failure',
      'last failure: ' + node.last_failure.reason + (at ? ' (' + at + ')' : '')));
  }
  item.appendChild(line);
  if (node.children && node.children.length) item.appendChild(actorList(node.children));
  return item;
}

// ---- Live status: a server-sent-event stream read through fetch -------------
// EventSource cannot send the Authorization header, so the stream is parsed here.

// The stream covers the sessions that exist when it opens: reopen when that set changes.
function syncStream() {
  if (!state.token) return;
  const key = [...state.sessions.keys()].sort().join('\n');
  if (key === state.streamKey) return;
  state.streamKey = key;
  state.streamDelay = STREAM_MIN_DELAY_MS;
  openStream();
}

function stopStream() {
  clearTimeout(state.streamRetry);
  state.streamRetry = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.streamLive = false;
}

function openStream() {
  stopStream();
  const ctrl = new AbortController();
  state.stream = ctrl;
  setStreamStatus('Live updates: connecting…', false);
  readStream(ctrl).then(
    () => streamEnded(ctrl, 'the stream closed'),
    (err) => streamEnded(ctrl, err.message || 'the stream failed'));
}

async function readStream(ctrl) {
  const res = await send('GET', '/events/stream?types=session.status', { signal: ctrl.signal })
    .catch((err) => { throw new Error(err.status ? 'HTTP ' + err.status : err.message); });
  if (!res.body) throw new Error('streaming is not supported by this browser');
  const reader = res.body.getReader(); // aborting the controller makes read() reject
  state.streamLive = true;
  state.streamOpenedAt = Date.now();
  setStreamStatus('Live updates: on', true);
  loadSessions(); // catch up on anything that changed while the stream was closed
  const decoder = new TextDecoder();
  const feed = sseParser(onStreamMessage);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    feed(decoder.decode(value, { stream: true }));
  }
}

// Retries with a doubling delay; a stream that was replaced or stopped on purpose stays closed.
// Only a stream that stayed up a while earns a quick retry, so one that the server keeps
// closing at once is not reopened every second.
function streamEnded(ctrl, reason) {
  if (state.stream !== ctrl || !state.token) return;
  const lasted = state.streamLive ? Date.now() - state.streamOpenedAt : 0;
  state.stream = null;
  state.streamLive = false;
  if (lasted > 3 * STREAM_MAX_DELAY_MS) state.streamDelay = STREAM_MIN_DELAY_MS;
  const delay = state.streamDelay;
  state.streamDelay = Math.min(delay * 2, STREAM_MAX_DELAY_MS);
  setStreamStatus('Live updates paused (' + reason + '); retrying in ' +
    Math.round(delay / 1000) + ' s', false);
  state.streamRetry = setTimeout(openStream, delay);
}

function setStreamStatus(text, live) {
  const node = $('stream-status');
  node.textContent = text;
  node.classList.toggle('live', live);
}

// Returns a function that takes decoded text chunks and calls `onMessage({event, id, data})`
// for each complete message; a message may arrive split across chunks.
function sseParser(onMessage) {
  let buffer = '';
  let message = { event: '', id: '', data: [] };
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split('\n');
    buffer = lines.pop(); // an unfinished line waits for the next chunk
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (message.data.length) onMessage({ ...message, data: message.data.join('\n') });
        message = { event: '', id: '', data: [] };
      } else if (!line.startsWith(':')) { // ':' starts a keep-alive comment
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') message.data.push(value);
        else if (field === 'event' || field === 'id') message[field] = value;
      }
    }
  };
}

function onStreamMessage(message) {
  let envelope;
  try {
    envelope = JSON.parse(message.data);
  } catch (_) {
    return; // not an event envelope; nothing to show
  }
  if (envelope.type === 'session.status' && envelope.data) {
    setStatus(envelope.session, envelope.data.status);
  }
}

// ---- Wiring -----------------------------------------------------------------

function onSubmit(id, handler) {
  $(id).addEventListener('submit', (event) => {
    event.preventDefault();
    handler(event);
  });
}

function onAction(id, work) {
  const button = $(id);
  button.addEventListener('click', () => sessionAction(button, work));
}

function init() {
  onSubmit('sign-in-form', () => {
    const token = $('token').value.trim();
    if (token) signIn(token);
  });
  $('sign-out').addEventListener('click', () => signOut(''));
  onSubmit('create-form', createSession);
  onAction('connect', postAction('connect'));
  onAction('disconnect', postAction('disconnect'));
  onAction('logout', postAction('logout'));
  $('delete').addEventListener('click', () => showDeleteConfirm(true));
  $('delete-cancel').addEventListener('click', () => showDeleteConfirm(false));
  onAction('delete-confirm', deleteSelected);
  const pairButton = $('pair-submit');
  onSubmit('pair-form', () => sessionAction(pairButton, requestPairCode));

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
}

init();
