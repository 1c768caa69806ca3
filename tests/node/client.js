#!/usr/bin/env node
// A small gRPC client of oneshield-agent (@grpc/grpc-js + @grpc/proto-loader),
// loading proto/oneshield/agent/v1/agent.proto at run time. Used by
// tests/e2e/test_grpc_node.py; handy by hand too.
//
//   node client.js TARGET status
//   node client.js TARGET metrics [PREFIX]
//   node client.js TARGET stream-metrics PREFIX INTERVAL_MS COUNT
//   node client.js TARGET subscribe AFTER_SEQ TYPES MAX_EVENTS
//
// TYPES is comma-separated event type names or numbers ("" or "-": all).
// Output: one JSON object per line (a message; for subscribe and
// stream-metrics one per message, and the call is cancelled after COUNT /
// MAX_EVENTS). Field names as in the proto (keepCase), enums as names,
// 64-bit integers as decimal strings. An RPC error prints
// {"error": {"code": N, "name": "...", "details": "..."}} and exits 1;
// bad usage exits 2. ONESHIELD_CLIENT_DEADLINE_MS bounds every call
// (default 60000). The agent's bearer token is sent as "authorization"
// metadata: ONESHIELD_TOKEN, or the first line of ONESHIELD_TOKEN_FILE
// (e.g. /etc/oneshield-agent/token).
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = process.env.ONESHIELD_PROTO_ROOT || path.resolve(__dirname, '..', '..', 'proto');
const DEADLINE_MS = Number(process.env.ONESHIELD_CLIENT_DEADLINE_MS || 60000);

function token() {
  if (process.env.ONESHIELD_TOKEN) return process.env.ONESHIELD_TOKEN;
  if (process.env.ONESHIELD_TOKEN_FILE) {
    return require('fs').readFileSync(process.env.ONESHIELD_TOKEN_FILE, 'utf8').split('\n')[0];
  }
  return null;
}

const USAGE = `usage: client.js TARGET status
       client.js TARGET metrics [PREFIX]
       client.js TARGET stream-metrics PREFIX INTERVAL_MS COUNT
       client.js TARGET subscribe AFTER_SEQ TYPES MAX_EVENTS`;

function usage(msg) {
  if (msg) process.stderr.write(`client.js: ${msg}\n`);
  process.stderr.write(USAGE + '\n');
  process.exit(2);
}

function load() {
  const def = protoLoader.loadSync('oneshield/agent/v1/agent.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def).oneshield.agent.v1;
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const codeNames = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

function fail(err) {
  print({ error: { code: err.code, name: codeNames[err.code] || 'UNKNOWN', details: err.details || err.message } });
  process.exitCode = 1;
}

function deadline() {
  return new Date(Date.now() + DEADLINE_MS);
}

function count(s, what) {
  if (!/^\d+$/.test(s || '')) usage(`${what} must be a non-negative integer, not "${s}"`);
  return s;
}

// Server-streaming call: print each message, cancel after max; the
// cancellation we asked for is success.
function stream(call, max, client) {
  let n = 0;
  let done = false;
  const finish = () => {
    if (!done) {
      done = true;
      client.close();
    }
  };
  call.on('data', (m) => {
    if (n >= max) return;
    print(m);
    n++;
    if (n >= max) {
      call.cancel();
      finish();
    }
  });
  call.on('error', (err) => {
    if (!(err.code === grpc.status.CANCELLED && n >= max)) fail(err);
    finish();
  });
  call.on('end', finish);
}

function main(argv) {
  const [target, cmd, ...args] = argv;
  if (!target || !cmd) usage();
  const v1 = load();
  const client = new v1.Agent(target, grpc.credentials.createInsecure());
  // per call: grpc-js composes no call credentials with insecure ones
  const md = new grpc.Metadata();
  const tok = token();
  if (tok) md.set('authorization', `Bearer ${tok}`);
  const unary = (err, m) => {
    if (err) fail(err);
    else print(m);
    client.close();
  };
  switch (cmd) {
    case 'status':
      if (args.length) usage('status takes no arguments');
      client.GetStatus({}, md, { deadline: deadline() }, unary);
      break;
    case 'metrics':
      if (args.length > 1) usage('metrics takes at most a prefix');
      client.GetMetrics({ name_prefix: args[0] || '' }, md, { deadline: deadline() }, unary);
      break;
    case 'stream-metrics': {
      if (args.length !== 3) usage('stream-metrics PREFIX INTERVAL_MS COUNT');
      const req = { name_prefix: args[0], interval_ms: Number(count(args[1], 'INTERVAL_MS')) };
      stream(client.StreamMetrics(req, md, { deadline: deadline() }), Number(count(args[2], 'COUNT')), client);
      break;
    }
    case 'subscribe': {
      if (args.length !== 3) usage('subscribe AFTER_SEQ TYPES MAX_EVENTS');
      const types = args[1] === '' || args[1] === '-' ? [] : args[1].split(',').map((t) => (/^-?\d+$/.test(t) ? Number(t) : t));
      const req = { after_seq: count(args[0], 'AFTER_SEQ'), types };
      stream(client.Subscribe(req, md, { deadline: deadline() }), Number(count(args[2], 'MAX_EVENTS')), client);
      break;
    }
    default:
      usage(`unknown command "${cmd}"`);
  }
}

main(process.argv.slice(2));
