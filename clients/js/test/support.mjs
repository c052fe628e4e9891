// Test helpers: real `palaver` processes on port 0, a private `redis-server`
// on a free port, a TCP "load balancer" in front of nodes, and waiting with a
// bound (never a timing assertion).

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { WebSocket } from 'ws';

import { Palaver } from '../dist/index.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** "Eventually" here: processes and reconnects on two busy cores. A bound so a broken test ends. */
export const PATIENCE_MS = 30_000;

/** The `palaver` binary: `PALAVER_BIN`, else the newer of target/debug and target/release. */
export function binary() {
  if (process.env.PALAVER_BIN) {
    if (!existsSync(process.env.PALAVER_BIN)) throw new Error(`PALAVER_BIN=${process.env.PALAVER_BIN}: no such binary (run \`cargo build -p palaver-gateway\`)`);
    return process.env.PALAVER_BIN;
  }
  const built = ['debug', 'release']
    .map((profile) => join(ROOT, 'target', profile, 'palaver'))
    .filter((p) => existsSync(p))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
  if (built.length === 0) throw new Error('no palaver binary: run `cargo build -p palaver-gateway` or set PALAVER_BIN');
  return built[0];
}

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts a node (`--listen 127.0.0.1:0` unless `listen` is given); resolves once it listens. */
export async function startNode(args = [], { listen = '127.0.0.1:0', env = {} } = {}) {
  const child = spawn(binary(), ['--listen', listen, ...args], {
    env: {
      ...process.env,
      RUST_LOG: process.env.PALAVER_TEST_LOG ?? 'warn',
      // As tests/src/node.rs: the abuse limits would trip tests from 127.0.0.1; tests of them pass flags.
      PALAVER_RATE_LIMIT: 'off',
      PALAVER_CONN_RATE_PER_IP: 'off',
      PALAVER_MAX_CONNS_PER_IP: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  running.add(child);
  child.on('exit', () => running.delete(child));
  const lines = createInterface({ input: child.stdout });
  const first = await within(
    new Promise((resolve, reject) => {
      lines.once('line', resolve);
      child.once('error', (e) => reject(new Error(`palaver did not start: ${e.message}`)));
      child.once('exit', (code) => reject(new Error(`palaver exited (${code}) before listening`)));
    }),
    'palaver to listen',
  );
  lines.on('line', () => {}); // keep draining
  const m = /^palaver listening on http:\/\/(\S+) node=(\S+)/.exec(first);
  if (!m) throw new Error(`unexpected first line from palaver: ${first}`);
  const addr = m[1];
  return {
    addr,
    id: m[2],
    port: Number(addr.split(':').pop()),
    url: (path = '/ws') => `ws://${addr}${path}`,
    /** SIGKILL: a crashed node. */
    kill: () => stopChild(child, 'SIGKILL'),
    /** SIGTERM: a rolling restart (clients get 1001). */
    terminate: () => stopChild(child, 'SIGTERM'),
  };
}

function stopChild(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  return within(exited, `process ${child.pid} to exit`);
}

/** A free TCP port on 127.0.0.1 (closed again, to be taken by a process). */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A private redis-server without persistence, which tests may stop and restart. */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'palaver-js-redis-'));
  let child;
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      running.add(child);
      child.on('exit', () => running.delete(child));
      // A test that fails before stopping it must not keep the runner alive
      // (it is killed on exit with the others).
      child.unref();
      await waitFor('redis-server to answer PING', async () => (await redis.command('PING')) === '+PONG');
    },
    /** One command over RESP; the first reply line. */
    command(...args) {
      return new Promise((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        let reply = '';
        socket.on('error', () => resolve(undefined));
        socket.on('data', (chunk) => {
          reply += chunk;
          if (reply.includes('\r\n')) {
            socket.destroy();
            resolve(reply.split('\r\n')[0]);
          }
        });
        socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`);
      });
    },
    /** SAVE, then SIGKILL: restart() comes back with the data (an outage). */
    async stopKeepingData() {
      await redis.command('SAVE');
      await stopChild(child, 'SIGKILL');
    },
    /** SIGKILL and delete the data: restart() comes back empty. */
    async stopLosingData() {
      await stopChild(child, 'SIGKILL');
      rmSync(join(dir, 'dump.rdb'), { force: true });
    },
    restart: () => redis.start(),
    async stop() {
      await stopChild(child, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await redis.start();
  return redis;
}

/**
 * A TCP forwarder standing in for a load balancer: each new connection goes to
 * the first upstream that accepts it. It can refuse new connections, and mute
 * the open ones (the server's bytes stop reaching the client, while the client's
 * still reach the server: a half-dead link that only a heartbeat notices).
 */
export async function startProxy(upstreams, { dropFromServer, onClientFrame } = {}) {
  const links = new Set();
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    const link = { client, upstream: undefined, muted: false };
    links.add(link);
    client.on('close', () => {
      links.delete(link);
      link.upstream?.destroy();
    });
    client.on('error', () => {});
    const tryUpstream = (i) => {
      if (i >= upstreams.length) return client.destroy();
      const [host, port] = upstreams[i].split(':');
      const upstream = net.connect(Number(port), host);
      upstream.once('error', () => {
        if (!link.upstream) tryUpstream(i + 1);
        else client.destroy();
      });
      upstream.once('connect', () => {
        link.upstream = upstream;
        const inspect = onClientFrame ? frameFilter((text) => (onClientFrame(text), false)) : (d) => d;
        client.on('data', (d) => upstream.write(inspect(d)));
        const forward = dropFromServer ? frameFilter(dropFromServer) : (d) => d;
        upstream.on('data', (d) => {
          const kept = forward(d);
          if (!link.muted && kept.length > 0) client.write(kept);
        });
        upstream.on('close', () => client.destroy());
      });
    };
    tryUpstream(0);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    addr,
    url: (path = '/ws') => `ws://${addr}${path}`,
    refuse(on) {
      refusing = on;
    },
    /** Mutes every open connection (new ones are normal). */
    muteAll() {
      for (const link of links) link.muted = true;
    },
    close() {
      for (const link of links) link.client.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * Cuts one direction of an upgraded connection into WebSocket frames and
 * leaves out the text frames `drop(text)` picks: a faulty intermediary, for the
 * client's gap handling, or (dropping nothing) a way to read what a client sends.
 */
function frameFilter(drop) {
  let pending = Buffer.alloc(0);
  let upgraded = false;
  return (chunk) => {
    pending = Buffer.concat([pending, chunk]);
    const out = [];
    if (!upgraded) {
      const end = pending.indexOf('\r\n\r\n');
      if (end < 0) return Buffer.alloc(0);
      out.push(pending.subarray(0, end + 4));
      pending = pending.subarray(end + 4);
      upgraded = true;
    }
    for (;;) {
      if (pending.length < 2) break;
      let length = pending[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (pending.length < 4) break;
        length = pending.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (pending.length < 10) break;
        length = Number(pending.readBigUInt64BE(2));
        offset = 10;
      }
      const masked = (pending[1] & 0x80) !== 0; // client frames are
      const start = offset + (masked ? 4 : 0);
      if (pending.length < start + length) break;
      const frame = pending.subarray(0, start + length);
      let text;
      if ((pending[0] & 0x0f) === 1) {
        const payload = Buffer.from(pending.subarray(start, start + length));
        if (masked) for (let i = 0; i < payload.length; i++) payload[i] ^= pending[offset + (i % 4)];
        text = payload.toString('utf8');
      }
      if (text === undefined || !drop(text)) out.push(frame);
      pending = pending.subarray(start + length);
    }
    return Buffer.concat(out);
  };
}

/** Polls `check` until it returns something truthy, within `PATIENCE_MS`. */
export async function waitFor(what, check, patience = PATIENCE_MS) {
  const deadline = Date.now() + patience;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`waited ${patience} ms for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** `promise`, or a failure naming `what` after `PATIENCE_MS`. */
export function within(promise, what, patience = PATIENCE_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`waited ${patience} ms for ${what}`)), patience);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A client on Node 20: the `ws` package as its WebSocket; short timers so tests are quick. */
export function client(url, credentials, options = {}) {
  return new Palaver(url, credentials, { WebSocket, minDelay: 50, maxDelay: 500, ...options });
}

/** Joins `name` and records everything the room delivers to the application. */
export async function record(palaver, name) {
  const room = palaver.room(name);
  const seen = { room, messages: [], joined: [], presence: [], gaps: [], errors: [] };
  room.on('message', (m) => seen.messages.push(m));
  room.on('joined', (j) => seen.joined.push(j));
  room.on('presence', (p) => seen.presence.push(p));
  room.on('gap', (g) => seen.gaps.push(g));
  room.on('error', (e) => seen.errors.push(e));
  await within(room.join(), `joining ${name}`);
  return seen;
}

/** Records every `disconnected` event of a client. */
export function disconnects(palaver) {
  const list = [];
  palaver.on('disconnected', (d) => list.push(d));
  return list;
}

/** `(seq, user, text)` rows, to compare what was delivered briefly. */
export const rows = (messages) => messages.map((m) => [m.seq, m.user, m.text]);

/** An HS256 JWT for `--jwt-secret`. */
export function mintToken(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
