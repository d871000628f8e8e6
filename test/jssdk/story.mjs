// End-to-end story against a running Veche with matrix-js-sdk, the library
// behind Element Web. Run by run.sh, which starts a fresh server:
//
//   node story.mjs http://127.0.0.1:PORT
//
// Two users register (open registration, m.login.dummy) and log in; A
// creates a room and invites B; B sees the invite through /sync, joins; A and
// B exchange a message each, each received through the other's /sync; then
// /messages backfill, both raw (createMessagesRequest) and through a new
// client's scrollback. Every step has a timeout and fails fast, naming the
// step, the SDK's error and every non-2xx answer the server gave.
//
// JSSDK_VERBOSE=1 prints every HTTP request and the SDK's debug log.

import * as sdk from "matrix-js-sdk";
import { logger as sdkLogger } from "matrix-js-sdk/lib/logger.js";

const {
  ClientEvent,
  RoomEvent,
  RoomMemberEvent,
  SyncState,
  Direction,
  EventTimeline,
  MatrixError,
} = sdk;

const VERBOSE = process.env.JSSDK_VERBOSE === "1";
const STEP_MS = Number(process.env.JSSDK_STEP_TIMEOUT_MS || 15000);

// The story prints through out/errOut; the SDK logs through console (its
// loglevel logger looks the console methods up at each call). Its debug and
// info lines are dropped, and its warnings and errors kept for the failure
// report, unless JSSDK_VERBOSE=1 shows everything as it happens.
const out = (s) => process.stdout.write(`${s}\n`);
const errOut = (s) => process.stderr.write(`${s}\n`);
const sdkLog = [];
if (!VERBOSE) {
  const keep = (level) => (...args) => {
    const text = args
      .map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === "string" ? a : safeJSON(a)))
      .join(" ");
    sdkLog.push(`${new Date().toISOString().slice(11, 23)} ${level} ${text.slice(0, 500)}`);
  };
  console.debug = console.info = console.trace = console.log = () => {};
  console.warn = keep("warn");
  console.error = keep("error");
}
sdkLogger.setLevel(VERBOSE ? "debug" : "warn", false);

const baseUrl = (process.argv[2] || process.env.VECHE_URL || "").replace(/\/+$/, "");
if (!baseUrl) {
  errOut("usage: node story.mjs http://127.0.0.1:PORT");
  process.exit(2);
}

function safeJSON(v) {
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

// ---------------------------------------------------------------- tracing

// Every HTTP exchange the SDK makes goes through traceFetch, so a failure
// report can show exactly which request the server answered badly.
const trace = [];
const SECRET_KEYS = new Set(["password", "access_token", "refresh_token", "new_password", "token"]);

function redact(text) {
  if (typeof text !== "string" || text === "") return text;
  try {
    return JSON.stringify(JSON.parse(text), (k, v) => (SECRET_KEYS.has(k) ? "<redacted>" : v));
  } catch {
    return text.slice(0, 2000);
  }
}

function redactURL(u) {
  const url = new URL(u);
  for (const k of ["access_token"]) if (url.searchParams.has(k)) url.searchParams.set(k, "<redacted>");
  return url.pathname + url.search;
}

function traceFetch(who) {
  return async (resource, init = {}) => {
    const method = (init.method || "GET").toUpperCase();
    const path = redactURL(resource.toString());
    const t0 = Date.now();
    const entry = { who, method, path };
    trace.push(entry);
    let res;
    try {
      res = await fetch(resource, init);
    } catch (err) {
      entry.error = err.name === "AbortError" ? "aborted (client stopped)" : String(err);
      entry.ms = Date.now() - t0;
      if (VERBOSE) out(`  [http] ${who} ${method} ${path} -> ${entry.error}`);
      throw err;
    }
    entry.status = res.status;
    entry.ms = Date.now() - t0;
    if (!res.ok) {
      entry.reqBody = typeof init.body === "string" ? redact(init.body) : undefined;
      entry.resBody = redact(await res.clone().text());
    }
    if (VERBOSE) out(`  [http] ${who} ${method} ${path} -> ${res.status} (${entry.ms} ms)`);
    return res;
  };
}

function formatExchange(e) {
  let s = `${e.who}: ${e.method} ${e.path} -> ${e.status ?? e.error}`;
  if (e.reqBody) s += `\n      request:  ${e.reqBody}`;
  if (e.resBody !== undefined) s += `\n      response: ${e.resBody}`;
  return s;
}

// Non-2xx answers the story expects: the first /register of user-interactive
// auth answers 401 with the flows.
function expectedFailure(e) {
  return e.status === 401 && e.method === "POST" && /\/register(\?|$)/.test(e.path) && !/"auth"/.test(e.reqBody || "");
}

// Why the SDK needs an endpoint, for the endpoints a server is likely to lack.
const WHY = [
  [
    /\/pushrules\/?(\?|$)/,
    "startClient() fetches the push rules (GET /pushrules/, spec: Push Notifications module) before its first /sync and retries it forever on error, so no client syncs without it",
  ],
  [/\/capabilities/, "startClient() polls GET /capabilities"],
  [/\/user\/[^/]+\/filter/, "startClient() uploads its /sync filter with POST /user/{userId}/filter"],
];

function unexpectedFailures() {
  return trace.filter((e) => e.status !== undefined && e.status >= 300 && !expectedFailure(e));
}

// ---------------------------------------------------------------- steps

const clients = new Map(); // name -> MatrixClient, for the failure report
let stepNo = 0;

class StoryError extends Error {}

function fail(msg) {
  throw new StoryError(msg);
}

function assert(cond, msg) {
  if (!cond) fail(msg);
}

function describeError(err) {
  if (err instanceof MatrixError || (err && err.errcode)) {
    return `${err.httpStatus ?? "?"} ${err.errcode ?? ""} ${JSON.stringify(err.data ?? {})}${err.url ? ` from ${redactURL(err.url)}` : ""}`;
  }
  if (err instanceof StoryError) return err.message;
  return err && err.stack ? err.stack : String(err);
}

function report(name, err) {
  errOut(`\nFAIL: step ${stepNo} "${name}": ${describeError(err)}`);
  for (const [who, c] of clients) {
    if (!c.clientRunning) continue;
    const data = c.getSyncStateData?.();
    const syncErr = data && data.error ? ` (last sync error: ${describeError(data.error)})` : "";
    errOut(`  client ${who}: sync state ${c.getSyncState() ?? "not started"}${syncErr}`);
  }
  const bad = unexpectedFailures();
  if (bad.length) {
    errOut(`\nNon-2xx answers from the server (each distinct one once; the SDK retries some):`);
    const seen = new Map();
    for (const e of bad) {
      const key = `${e.method} ${e.path.split("?")[0]} ${e.status}`;
      if (seen.has(key)) seen.get(key).n++;
      else seen.set(key, { e, n: 1 });
    }
    for (const { e, n } of seen.values()) {
      errOut(`  ${formatExchange(e)}${n > 1 ? `\n      (${n} times)` : ""}`);
      if ((e.status === 404 || e.status === 405) && /M_UNRECOGNIZED/.test(e.resBody || "")) {
        errOut(`      => the server does not implement ${e.method} ${e.path.split("?")[0]}, which matrix-js-sdk calls`);
        for (const [re, why] of WHY) if (re.test(e.path)) errOut(`         ${why}`);
      }
    }
  } else {
    errOut("\nThe server answered every request with 2xx (or the expected 401 of UIA).");
  }
  const last = trace.slice(-15);
  errOut(`\nLast ${last.length} HTTP exchanges:`);
  for (const e of last) {
    errOut(`  ${e.who}: ${e.method} ${e.path} -> ${e.status ?? e.error ?? "pending"}${e.ms !== undefined ? ` (${e.ms} ms)` : ""}`);
  }
  if (sdkLog.length) {
    const tail = sdkLog.slice(-10);
    errOut(`\nLast ${tail.length} warnings/errors logged by matrix-js-sdk:`);
    for (const l of tail) errOut(`  ${l}`);
  }
  errOut("");
}

let currentStep = "(before the first step)";
let failed = false;

async function failStory(name, err) {
  if (failed) return;
  failed = true;
  report(name, err);
  errOut(`${Math.max(0, stepNo - 1)} passed, 1 failed`);
  await shutdown();
  process.exit(1);
}

// A rejection nobody awaits yet (an SDK event handler, a promise created
// before the action that settles it) still fails the story, in its step.
process.on("unhandledRejection", (err) => failStory(currentStep, err));
process.on("uncaughtException", (err) => failStory(currentStep, err));

async function step(name, fn, ms = STEP_MS) {
  stepNo++;
  currentStep = name;
  const t0 = Date.now();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new StoryError(`timed out after ${ms} ms`)), ms);
  });
  try {
    const v = await Promise.race([fn(), timeout]);
    out(`ok ${stepNo} - ${name} (${Date.now() - t0} ms)`);
    return v;
  } catch (err) {
    await failStory(name, err);
  } finally {
    clearTimeout(timer);
  }
}

// until resolves once check() returns a truthy value, re-checking whenever
// one of the given events fires on emitter. The listeners are attached
// before the first check, so nothing can slip through in between; callers
// that trigger the change themselves create the promise before acting.
function until(emitter, events, check) {
  let listener;
  const p = new Promise((resolve, reject) => {
    listener = (...args) => {
      try {
        const v = check(...args);
        if (v) resolve(v);
      } catch (err) {
        reject(err);
      }
    };
    for (const ev of events) emitter.on(ev, listener);
    listener();
  });
  return p.finally(() => {
    for (const ev of events) emitter.off(ev, listener);
  });
}

// timelineEvent resolves with the first live event in roomId's timeline on
// client that matches pred and came from the server through /sync
// (RoomEvent.Timeline; local echoes of the client's own sends are skipped).
function timelineEvent(client, roomId, pred) {
  return until(client, [RoomEvent.Timeline], (event, room, toStartOfTimeline) => {
    if (!event || !room || room.roomId !== roomId || toStartOfTimeline) return null;
    if (event.isSending?.() || event.status) return null; // local echo, not from the server
    return pred(event) ? event : null;
  });
}

function syncPrepared(client) {
  return until(client, [ClientEvent.Sync], () => {
    const state = client.getSyncState();
    if (state === SyncState.Error) {
      const err = client.getSyncStateData()?.error;
      fail(`sync went to ERROR: ${describeError(err)}`);
    }
    return state === SyncState.Prepared || state === SyncState.Syncing;
  });
}

function newClient(name, creds = {}) {
  const c = sdk.createClient({ baseUrl, fetchFn: traceFetch(name), ...creds });
  clients.set(name, c);
  return c;
}

async function shutdown() {
  for (const c of clients.values()) {
    try {
      c.stopClient();
    } catch {
      /* best effort */
    }
  }
}

function timelineSummary(room) {
  return room
    .getLiveTimeline()
    .getEvents()
    .map((e) => (e.getType() === "m.room.message" ? `m.room.message(${e.getContent().body})` : e.getType()))
    .join(", ");
}

// ---------------------------------------------------------------- the story

const run = Math.random().toString(36).slice(2, 8);
const password = `pw-${run}-correct-horse`;
const users = { a: `alice-${run}`, b: `bob-${run}` };
const t0 = Date.now();

out(`matrix-js-sdk story against ${baseUrl}`);

const anon = newClient("anon");

await step("GET /versions through client.getVersions()", async () => {
  const v = await anon.getVersions();
  assert(Array.isArray(v.versions) && v.versions.length > 0, `versions missing or empty: ${JSON.stringify(v)}`);
  assert(v.versions.some((x) => /^v1\.\d+$/.test(x)), `no v1.x spec version in ${JSON.stringify(v.versions)}`);
  assert(await anon.isVersionSupported("v1.1"), `SDK does not consider v1.1 supported; versions ${JSON.stringify(v.versions)}`);
});

async function register(localpart) {
  const c = newClient(`register-${localpart}`);
  // First request without auth: user-interactive auth answers 401 with the
  // flows and a session.
  let session;
  try {
    await c.registerRequest({ username: localpart, password, initial_device_display_name: "jssdk story" });
    fail("POST /register without auth succeeded; expected 401 with UIA flows");
  } catch (err) {
    if (err instanceof StoryError) throw err;
    assert(err.httpStatus === 401, `first POST /register: expected 401 with UIA flows, got ${describeError(err)}`);
    const flows = err.data?.flows ?? [];
    assert(
      flows.some((f) => Array.isArray(f.stages) && f.stages.length === 1 && f.stages[0] === "m.login.dummy"),
      `no m.login.dummy flow in 401 ${JSON.stringify(err.data)}`,
    );
    session = err.data.session;
    assert(typeof session === "string" && session, `401 of /register has no session: ${JSON.stringify(err.data)}`);
  }
  const res = await c.registerRequest({
    username: localpart,
    password,
    initial_device_display_name: "jssdk story",
    auth: { type: "m.login.dummy", session },
  });
  assert(typeof res.user_id === "string" && res.user_id.startsWith(`@${localpart}:`), `register: bad user_id in ${redact(JSON.stringify(res))}`);
  assert(res.access_token && res.device_id, `register: no access_token/device_id in response`);
  return res.user_id;
}

async function login(name, userId, device) {
  const c = newClient(`login-${name}`);
  const res = await c.loginWithPassword(userId, password);
  assert(res.user_id === userId, `login returned user_id ${res.user_id}, want ${userId}`);
  assert(res.access_token && res.device_id, "login response lacks access_token or device_id");
  c.stopClient();
  clients.delete(`login-${name}`);
  const client = newClient(device, { userId: res.user_id, accessToken: res.access_token, deviceId: res.device_id });
  const who = await client.whoami();
  assert(who.user_id === userId, `whoami says ${who.user_id}, want ${userId}`);
  return client;
}

const aId = await step("register A (UIA: 401 flows, then m.login.dummy)", () => register(users.a));
const bId = await step("register B (UIA: 401 flows, then m.login.dummy)", () => register(users.b));
const a = await step("A logs in with loginWithPassword", () => login("a", aId, "A"));
const b = await step("B logs in with loginWithPassword", () => login("b", bId, "B"));

await step("A and B start syncing (startClient reaches PREPARED)", async () => {
  const ready = Promise.all([syncPrepared(a), syncPrepared(b)]);
  await a.startClient({ initialSyncLimit: 20 });
  await b.startClient({ initialSyncLimit: 20, lazyLoadMembers: true });
  await ready;
});

const roomName = `Story ${run}`;
const roomId = await step("A creates a room and sees it through sync", async () => {
  const res = await a.createRoom({ name: roomName, preset: "private_chat", visibility: "private", topic: "matrix-js-sdk story" });
  assert(typeof res.room_id === "string" && res.room_id.startsWith("!"), `createRoom returned ${JSON.stringify(res)}`);
  await until(a, [ClientEvent.Room, RoomEvent.Timeline, RoomMemberEvent.Membership, ClientEvent.Sync], () => {
    const room = a.getRoom(res.room_id);
    return room && room.getMyMembership() === "join" && room.name === roomName;
  });
  return res.room_id;
});

await step("A invites B; B sees the invite through sync", async () => {
  const seen = until(b, [ClientEvent.Room, RoomMemberEvent.Membership, ClientEvent.Sync], () => {
    const room = b.getRoom(roomId);
    return room && room.getMyMembership() === "invite" ? room : null;
  });
  await a.invite(roomId, bId);
  const room = await seen;
  const me = room.getMember(bId);
  assert(me && me.events.member, "B's invited room has no m.room.member event for B");
  const inviter = me.events.member.getSender();
  assert(inviter === aId, `invite sent by ${inviter}, want ${aId}`);
  if (room.name !== roomName) {
    out(`  note: B's invite shows room name ${JSON.stringify(room.name)}, not ${JSON.stringify(roomName)} (m.room.name missing from invite_state?)`);
  }
});

await step("B joins; both see B joined through sync", async () => {
  const joinedFor = (client) =>
    until(client, [RoomMemberEvent.Membership, ClientEvent.Room, RoomEvent.Timeline, ClientEvent.Sync], () => {
      const room = client.getRoom(roomId);
      return room && room.getMember(bId)?.membership === "join";
    });
  const both = Promise.all([joinedFor(a), joinedFor(b)]);
  await b.joinRoom(roomId);
  await both;
  const room = b.getRoom(roomId);
  assert(room.getMyMembership() === "join", `B's room membership is ${room.getMyMembership()}`);
  assert(room.name === roomName, `B sees room name ${JSON.stringify(room.name)}, want ${JSON.stringify(roomName)}`);
});

const hello = `hello from A (${run})`;
const helloId = await step("A sends a message; B receives it through sync (Room.timeline)", async () => {
  const got = timelineEvent(b, roomId, (e) => e.getType() === "m.room.message" && e.getContent().body === hello);
  const { event_id } = await a.sendTextMessage(roomId, hello);
  assert(typeof event_id === "string" && event_id.startsWith("$"), `send returned event_id ${event_id}`);
  const ev = await got;
  assert(ev.getId() === event_id, `B received ${ev.getId()}, A sent ${event_id}`);
  assert(ev.getSender() === aId, `sender ${ev.getSender()}, want ${aId}`);
  return event_id;
});

const reply = `hello back from B (${run})`;
const replyId = await step("B replies; A receives it through sync (Room.timeline)", async () => {
  const got = timelineEvent(a, roomId, (e) => e.getType() === "m.room.message" && e.getContent().body === reply);
  const { event_id } = await b.sendTextMessage(roomId, reply);
  const ev = await got;
  assert(ev.getId() === event_id, `A received ${ev.getId()}, B sent ${event_id}`);
  assert(ev.getSender() === bId, `sender ${ev.getSender()}, want ${bId}`);
  return event_id;
});

await step("both live timelines hold the two messages in order", async () => {
  for (const [who, c] of [["A", a], ["B", b]]) {
    // A's own send may still be a local echo whose remote echo is on its way.
    await until(c, [RoomEvent.Timeline, RoomEvent.LocalEchoUpdated, ClientEvent.Sync], () => {
      const ids = c.getRoom(roomId).getLiveTimeline().getEvents().map((e) => e.getId());
      return ids.includes(helloId) && ids.includes(replyId);
    });
    const ids = c.getRoom(roomId).getLiveTimeline().getEvents().map((e) => e.getId());
    assert(ids.indexOf(helloId) < ids.indexOf(replyId), `${who}'s timeline has the reply before the message: ${timelineSummary(c.getRoom(roomId))}`);
    assert(new Set(ids).size === ids.length, `${who}'s timeline has duplicate events: ${timelineSummary(c.getRoom(roomId))}`);
  }
});

await step("GET /messages backwards then forwards (createMessagesRequest)", async () => {
  // Backwards from the end of the room until the server says there is no more.
  const back = [];
  let from = null;
  let first = null;
  for (let page = 0; page < 20; page++) {
    const res = await b.createMessagesRequest(roomId, from, 3, Direction.Backward);
    assert(Array.isArray(res.chunk), `/messages: no chunk array in ${JSON.stringify(res).slice(0, 300)}`);
    assert(typeof res.start === "string" && res.start, `/messages: no start token in page ${page}`);
    if (page === 0) first = res;
    back.push(...res.chunk);
    if (!res.end || res.chunk.length === 0) break;
    assert(res.end !== from, `/messages: end token did not move (${res.end})`);
    from = res.end;
  }
  const types = back.map((e) => e.type);
  assert(first.chunk.length > 0, "/messages backwards from the end returned no events");
  assert(first.chunk[0].event_id === replyId, `newest event is ${first.chunk[0].event_id} (${first.chunk[0].type}), want B's reply ${replyId}`);
  const iReply = back.findIndex((e) => e.event_id === replyId);
  const iHello = back.findIndex((e) => e.event_id === helloId);
  assert(iReply >= 0 && iHello > iReply, `backwards order wrong: reply at ${iReply}, message at ${iHello}`);
  assert(types[types.length - 1] === "m.room.create", `backwards pagination did not end at m.room.create; types: ${types.join(", ")}`);
  const ids = back.map((e) => e.event_id);
  assert(new Set(ids).size === ids.length, `backwards pagination repeated events: ${ids.join(", ")}`);

  // Forwards without a from token starts at the beginning of the room
  // (spec v1.3+): the same events, oldest first.
  const fwd = [];
  from = null;
  for (let page = 0; page < 20; page++) {
    const res = await b.createMessagesRequest(roomId, from, 3, Direction.Forward);
    assert(Array.isArray(res.chunk), `/messages forwards: no chunk array in ${JSON.stringify(res).slice(0, 300)}`);
    fwd.push(...res.chunk);
    if (!res.end || res.chunk.length === 0) break;
    assert(res.end !== from, `/messages forwards: end token did not move (${res.end})`);
    from = res.end;
  }
  const fwdIds = fwd.map((e) => e.event_id);
  const want = ids.slice().reverse();
  assert(
    JSON.stringify(fwdIds) === JSON.stringify(want),
    `forwards pagination from the start differs from backwards reversed:\n    forwards:  ${fwd.map((e) => e.type).join(", ")}\n    backwards: ${back.map((e) => e.type).reverse().join(", ")}`,
  );
  out(`  ${back.length} events backwards, ${fwd.length} forwards`);
});

await step("a second device of A backfills with scrollback", async () => {
  const a2 = await login("a2", aId, "A2");
  const ready = syncPrepared(a2);
  await a2.startClient({ initialSyncLimit: 1 });
  await ready;
  const room = await until(a2, [ClientEvent.Room, ClientEvent.Sync], () => a2.getRoom(roomId));
  const before = room.getLiveTimeline().getEvents().length;
  const token = room.getLiveTimeline().getPaginationToken(EventTimeline.BACKWARDS);
  assert(token, `initial sync with limit 1 gave no prev_batch for the room (timeline: ${timelineSummary(room)})`);
  for (let i = 0; i < 20 && room.oldState.paginationToken !== null; i++) {
    await a2.scrollback(room, 4);
  }
  assert(room.oldState.paginationToken === null, "scrollback never reached the start of the room");
  const events = room.getLiveTimeline().getEvents();
  const ids = events.map((e) => e.getId());
  assert(events[0].getType() === "m.room.create", `after scrollback the timeline does not start with m.room.create: ${timelineSummary(room)}`);
  assert(ids.indexOf(helloId) >= 0 && ids.indexOf(helloId) < ids.indexOf(replyId), `after scrollback: want message then reply: ${timelineSummary(room)}`);
  assert(new Set(ids).size === ids.length, `scrollback duplicated events: ${timelineSummary(room)}`);
  out(`  ${before} event(s) from sync, ${events.length} after scrollback`);
  a2.stopClient();
  await a2.logout(true);
  clients.delete("A2");
});

await shutdown();

const bad = unexpectedFailures();
if (bad.length) {
  out(`\nnote: ${bad.length} non-2xx answer(s) the story survived:`);
  for (const e of bad) out(`  ${formatExchange(e)}`);
}
out(`\nstory took ${Date.now() - t0} ms, ${trace.length} HTTP requests`);
out(`${stepNo} passed, 0 failed`);
process.exit(0);
