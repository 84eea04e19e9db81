'use strict';
/*
 * server.js: the loopback S3 server that spotrun's tests and demos talk to.
 * It runs s3rver (a real S3-compatible server process that stores objects in a
 * directory) and puts one Koa middleware in front of s3rver's own, which makes
 * it behave like S3 where s3rver does not: SigV4 verification of header- and
 * query-signed requests (and of x-amz-content-sha256 against the body),
 * conditional writes (If-None-Match: *, If-Match) on PutObject and
 * CompleteMultipartUpload, AbortMultipartUpload, part size and ETag checks,
 * multipart ETags of the form "md5-of-part-md5s-N", suffix byte ranges, and
 * seeded fault injection steered at run time through /__spotrun/.
 * See README.md in this folder for the command line and the control endpoint.
 */

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');
const { PassThrough, Readable, Transform } = require('stream');
const { pipeline } = require('stream/promises');
const { Worker } = require('worker_threads');
const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const S3Object = require('s3rver/lib/models/object');

const FAULT_KINDS = ['slowdown', '500', 'reset', 'slow'];
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PART_NUMBER = 10000;
const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600;
const CONTROL_PREFIX = '/__spotrun/';

const USAGE = `usage: node --openssl-legacy-provider server.js --dir DIR [options]
  --dir DIR            where objects are stored (created if missing)
  --host ADDR          address to listen on (default 127.0.0.1)
  --port N             port, 0 picks a free one (default 0)
  --bucket NAME        create this bucket at start (repeatable)
  --port-file PATH     write the port number here once ready
  --access-key ID      accepted access key (repeatable, paired in order
  --secret-key KEY       with --secret-key; default spotrun-test /
                         spotrun-test-secret)
  --region NAME        region requests must be signed for (default us-east-1)
  --fault-rate R       probability 0..1 that a request gets a fault (default 0)
  --faults LIST        comma list of ${FAULT_KINDS.join(', ')} (default all)
  --slow-ms N          delay of a "slow" fault in ms (default 2000)
  --seed N             seed of the fault sequence (default 1)
  --tls-cert PATH      serve https with this PEM certificate (and
  --tls-key PATH         its PEM key); plain http without them
  --verbose            log each request and its status to stderr
`;

class UsageError extends Error {}

/* An error that becomes an S3 XML error response. */
class S3Fail extends Error {
  constructor(status, code, message, detail = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

// ---------------------------------------------------------------------------
// Command line

function parseNumber(flag, text, { min, max, integer }) {
  const value = Number(text);
  if (text === '' || !Number.isFinite(value) || value < min || value > max ||
      (integer && !Number.isInteger(value))) {
    const kind = integer ? 'an integer' : 'a number';
    throw new UsageError(`${flag} must be ${kind} in ${min}..${max}, got "${text}"`);
  }
  return value;
}

function parseFaultList(flag, list) {
  for (const kind of list) {
    if (!FAULT_KINDS.includes(kind)) {
      throw new UsageError(`${flag}: unknown fault "${kind}" (known: ${FAULT_KINDS.join(', ')})`);
    }
  }
  return list;
}

function parseArgs(argv) {
  const opts = {
    dir: null,
    host: '127.0.0.1',
    port: 0,
    buckets: [],
    portFile: null,
    accessKeys: [],
    secretKeys: [],
    region: 'us-east-1',
    faultRate: 0,
    faults: [...FAULT_KINDS],
    slowMs: 2000,
    seed: 1,
    verbose: false,
    tlsCert: null,
    tlsKey: null,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i];
    let inline;
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) {
      inline = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--dir': opts.dir = value(); break;
      case '--host': opts.host = value(); break;
      case '--port': opts.port = parseNumber(flag, value(), { min: 0, max: 65535, integer: true }); break;
      case '--bucket': opts.buckets.push(value()); break;
      case '--port-file': opts.portFile = value(); break;
      case '--access-key': opts.accessKeys.push(value()); break;
      case '--secret-key': opts.secretKeys.push(value()); break;
      case '--region': opts.region = value(); break;
      case '--fault-rate': opts.faultRate = parseNumber(flag, value(), { min: 0, max: 1 }); break;
      case '--faults': opts.faults = parseFaultList(flag, value().split(',').map(s => s.trim()).filter(Boolean)); break;
      case '--slow-ms': opts.slowMs = parseNumber(flag, value(), { min: 0, max: 600000, integer: true }); break;
      case '--seed': opts.seed = parseNumber(flag, value(), { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true }); break;
      case '--verbose': opts.verbose = true; break;
      case '--tls-cert': opts.tlsCert = value(); break;
      case '--tls-key': opts.tlsKey = value(); break;
      case '--help': opts.help = true; break;
      default: throw new UsageError(`unknown argument "${argv[i]}"`);
    }
  }
  if (opts.help) return opts;
  if (!opts.dir) throw new UsageError('--dir is required');
  if (opts.accessKeys.length !== opts.secretKeys.length) {
    throw new UsageError('give one --secret-key for each --access-key');
  }
  if (opts.accessKeys.length === 0) {
    opts.accessKeys.push('spotrun-test');
    opts.secretKeys.push('spotrun-test-secret');
  }
  if (!opts.tlsCert !== !opts.tlsKey) throw new UsageError('--tls-cert and --tls-key go together');
  if (opts.faultRate > 0 && opts.faults.length === 0) {
    throw new UsageError('--fault-rate above 0 needs at least one kind in --faults');
  }
  return opts;
}

// ---------------------------------------------------------------------------
// Fault injection. The n-th draw after (re)seeding is derived from
// SHA-256(seed:n), so a given seed yields the same fault sequence every run.

class Faults {
  constructor({ rate, faults, slowMs, seed }) {
    this.rate = rate;
    this.kinds = faults;
    this.slowMs = slowMs;
    this.reseed(seed);
  }

  reseed(seed) {
    this.seed = seed;
    this.draws = 0;
  }

  uniform() {
    const digest = crypto.createHash('sha256').update(`${this.seed}:${this.draws++}`).digest();
    return digest.readUIntBE(0, 6) / 2 ** 48;
  }

  /* The fault kind for the next request, or null. */
  next() {
    if (this.rate <= 0 || this.uniform() >= this.rate) return null;
    return this.kinds[Math.floor(this.uniform() * this.kinds.length)];
  }

  settings() {
    return { rate: this.rate, faults: this.kinds, slow_ms: this.slowMs, seed: this.seed };
  }

  /* Applies a PUT /__spotrun/faults body; throws S3Fail on bad input. */
  update(body) {
    const bad = message => new S3Fail(400, 'InvalidArgument', message);
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw bad('body must be a JSON object');
    }
    for (const name of Object.keys(body)) {
      if (!['rate', 'faults', 'slow_ms', 'seed'].includes(name)) throw bad(`unknown field "${name}"`);
    }
    const { rate = this.rate, faults = this.kinds, slow_ms: slowMs = this.slowMs } = body;
    if (typeof rate !== 'number' || !(rate >= 0 && rate <= 1)) throw bad('rate must be a number in 0..1');
    if (!Array.isArray(faults) || faults.some(kind => !FAULT_KINDS.includes(kind))) {
      throw bad(`faults must be a list of ${FAULT_KINDS.join(', ')}`);
    }
    if (rate > 0 && faults.length === 0) throw bad('a rate above 0 needs at least one fault kind');
    if (!Number.isInteger(slowMs) || slowMs < 0) throw bad('slow_ms must be a non-negative integer');
    if ('seed' in body && !Number.isSafeInteger(body.seed)) throw bad('seed must be an integer');
    this.rate = rate;
    this.kinds = [...faults];
    this.slowMs = slowMs;
    if ('seed' in body) this.reseed(body.seed);
  }
}

// ---------------------------------------------------------------------------
// SigV4 (s3-api.md §2)

const sha256Hex = data => crypto.createHash('sha256').update(data).digest('hex');
const EMPTY_SHA256 = sha256Hex('');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();

/* Percent-decodes %XX escapes into bytes; every other character is kept. */
function percentDecode(text) {
  const bytes = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '%' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
      bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(...Buffer.from(text[i], 'utf8'));
    }
  }
  return Buffer.from(bytes);
}

/* URI-encodes bytes: A-Za-z0-9 and -_.~ stay, everything else is %XX. */
function uriEncode(bytes) {
  let out = '';
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    out += /[A-Za-z0-9\-_.~]/.test(ch) ? ch : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/* The canonical query string of a raw query, leaving out the parameter named skip. */
function canonicalQuery(rawQuery, skip) {
  const pairs = [];
  for (const item of rawQuery.split('&')) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const name = uriEncode(percentDecode(eq < 0 ? item : item.slice(0, eq)));
    const value = eq < 0 ? '' : uriEncode(percentDecode(item.slice(eq + 1)));
    if (name !== skip) pairs.push([name, value]);
  }
  const order = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  pairs.sort((a, b) => order(a[0], b[0]) || order(a[1], b[1]));
  return pairs.map(([name, value]) => `${name}=${value}`).join('&');
}

/* Header values by lowercase name, from the raw headers as they came in. */
function rawHeaderMap(rawHeaders) {
  const map = new Map();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    if (!map.has(name)) map.set(name, []);
    map.get(name).push(rawHeaders[i + 1].trim().replace(/\s+/g, ' '));
  }
  return map;
}

function signingKey(secret, date, region) {
  return hmac(hmac(hmac(hmac(`AWS4${secret}`, date), region), 's3'), 'aws4_request');
}

const malformed = message => new S3Fail(400, 'AuthorizationHeaderMalformed', message);

/* Splits "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." into its fields. */
function parseAuthorizationHeader(header) {
  if (/^AWS /.test(header)) {
    throw new S3Fail(400, 'InvalidRequest',
      'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
  }
  const match = /^AWS4-HMAC-SHA256\s+(.*)$/.exec(header);
  if (!match) throw new S3Fail(400, 'InvalidArgument', 'Unsupported Authorization Type');
  const fields = new Map();
  for (const part of match[1].split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  for (const name of ['Credential', 'SignedHeaders', 'Signature']) {
    if (!fields.get(name)) {
      throw malformed(`The authorization header is malformed; missing ${name}.`);
    }
  }
  return {
    credential: fields.get('Credential'),
    signedHeaders: fields.get('SignedHeaders'),
    signature: fields.get('Signature'),
  };
}

/*
 * Checks one SigV4 signature. `auth` holds what the request claims: credential
 * (AKID/date/region/service/aws4_request), signedHeaders, signature, amzDate,
 * payloadHash, and for query signing the expiry in seconds.
 */
function verifySignature(ctx, cfg, auth) {
  const scope = auth.credential.split('/');
  if (scope.length !== 5) {
    throw malformed('The authorization header is malformed; the Credential is mal-formed; ' +
      'expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".');
  }
  const [accessKey, date, region, service, terminal] = scope;
  const secret = cfg.credentials.get(accessKey);
  if (secret === undefined) {
    throw new S3Fail(403, 'InvalidAccessKeyId',
      'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: accessKey });
  }

  if (!/^\d{8}T\d{6}Z$/.test(auth.amzDate || '')) {
    throw new S3Fail(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
  }
  const a = auth.amzDate;
  const requestTime = Date.UTC(+a.slice(0, 4), +a.slice(4, 6) - 1, +a.slice(6, 8),
    +a.slice(9, 11), +a.slice(11, 13), +a.slice(13, 15));
  const now = Date.now();
  if (auth.expiresS === undefined) {
    if (Math.abs(now - requestTime) > MAX_CLOCK_SKEW_MS) {
      throw new S3Fail(403, 'RequestTimeTooSkewed',
        'The difference between the request time and the current time is too large.',
        { RequestTime: a, ServerTime: new Date(now).toISOString(), MaxAllowedSkewMilliseconds: MAX_CLOCK_SKEW_MS });
    }
  } else {
    if (requestTime - now > MAX_CLOCK_SKEW_MS) {
      throw new S3Fail(403, 'AccessDenied', 'Request is not yet valid');
    }
    if (now > requestTime + auth.expiresS * 1000) {
      throw new S3Fail(403, 'AccessDenied', 'Request has expired',
        { Expires: new Date(requestTime + auth.expiresS * 1000).toISOString(), ServerTime: new Date(now).toISOString() });
    }
  }

  if (date !== a.slice(0, 8)) {
    throw malformed('Invalid credential date. Date is not the same as X-Amz-Date.');
  }
  if (region !== cfg.region) {
    throw new S3Fail(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${region}' is wrong; expecting '${cfg.region}'`,
      { Region: cfg.region });
  }
  if (service !== 's3' || terminal !== 'aws4_request') {
    throw malformed(`The authorization header is malformed; incorrect service "${service}" or ` +
      `terminator "${terminal}". This endpoint belongs to "s3".`);
  }

  const signed = auth.signedHeaders.split(';');
  if (!signed.includes('host')) {
    throw new S3Fail(403, 'AccessDenied', 'The host header must be signed');
  }
  const headers = rawHeaderMap(ctx.req.rawHeaders);
  const unsigned = [...headers.keys()].filter(name => name.startsWith('x-amz-') && !signed.includes(name));
  if (unsigned.length) {
    throw new S3Fail(403, 'AccessDenied', 'There were headers present in the request which were not signed',
      { HeadersNotSigned: unsigned.join(', ') });
  }

  const url = ctx.req.url;
  const q = url.indexOf('?');
  const canonicalRequest = [
    ctx.req.method,
    q < 0 ? url : url.slice(0, q),
    canonicalQuery(q < 0 ? '' : url.slice(q + 1), auth.expiresS === undefined ? null : 'X-Amz-Signature'),
    signed.map(name => `${name}:${(headers.get(name) || []).join(',')}\n`).join(''),
    auth.signedHeaders,
    auth.payloadHash,
  ].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', a, `${date}/${region}/s3/aws4_request`, sha256Hex(canonicalRequest)].join('\n');
  const expected = crypto.createHmac('sha256', signingKey(secret, date, region)).update(stringToSign).digest('hex');
  const given = Buffer.from(auth.signature.toLowerCase());
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, Buffer.from(expected))) {
    throw new S3Fail(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. ' +
      'Check your key and signing method.', { AWSAccessKeyId: accessKey });
  }
}

/*
 * Authenticates a request signed in the Authorization header or in the query
 * string. Returns the payload hash the body must match (a hex SHA-256), or
 * null when the payload is unsigned.
 */
function authenticate(ctx, cfg) {
  const headers = ctx.req.headers;
  const query = ctx.query;
  if (headers.authorization) {
    const auth = parseAuthorizationHeader(headers.authorization);
    const payloadHash = headers['x-amz-content-sha256'];
    if (payloadHash === undefined) {
      throw new S3Fail(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    }
    if (/^STREAMING-/.test(payloadHash)) {
      throw new S3Fail(501, 'NotImplemented', `x-amz-content-sha256 ${payloadHash} is not supported by this server`);
    }
    if (payloadHash !== 'UNSIGNED-PAYLOAD' && !/^[0-9a-fA-F]{64}$/.test(payloadHash)) {
      throw new S3Fail(400, 'InvalidArgument',
        'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, or a valid sha256 value.',
        { ArgumentName: 'x-amz-content-sha256', ArgumentValue: payloadHash });
    }
    verifySignature(ctx, cfg, { ...auth, amzDate: headers['x-amz-date'], payloadHash });
    return payloadHash === 'UNSIGNED-PAYLOAD' ? null : payloadHash.toLowerCase();
  }
  if ('X-Amz-Algorithm' in query) {
    const needed = ['X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires', 'X-Amz-SignedHeaders', 'X-Amz-Signature'];
    if (query['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256' || needed.some(name => typeof query[name] !== 'string')) {
      throw new S3Fail(400, 'AuthorizationQueryParametersError',
        `Query-string authentication version 4 requires X-Amz-Algorithm=AWS4-HMAC-SHA256 and ${needed.join(', ')}.`);
    }
    const expiresS = Number(query['X-Amz-Expires']);
    if (!Number.isInteger(expiresS) || expiresS < 1 || expiresS > MAX_PRESIGN_EXPIRES_S) {
      throw new S3Fail(400, 'AuthorizationQueryParametersError',
        `X-Amz-Expires must be an integer in 1..${MAX_PRESIGN_EXPIRES_S}`);
    }
    verifySignature(ctx, cfg, {
      credential: query['X-Amz-Credential'],
      signedHeaders: query['X-Amz-SignedHeaders'],
      signature: query['X-Amz-Signature'],
      amzDate: query['X-Amz-Date'],
      payloadHash: headers['x-amz-content-sha256'] || 'UNSIGNED-PAYLOAD',
      expiresS,
    });
    return null;
  }
  throw new S3Fail(403, 'AccessDenied', 'Access Denied');
}

// ---------------------------------------------------------------------------
// Request bodies

/* Hands each piece of a request body to onPiece as it arrives; resolves
 * at the end of the body, rejects when it ends early. */
function eachBodyPiece(req, onPiece) {
  return new Promise((resolve, reject) => {
    req.on('data', onPiece);
    req.on('end', resolve);
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete) reject(new S3Fail(400, 'IncompleteBody', 'The request body ended early'));
    });
  });
}

/* The pieces of a request body as they arrived (kept apart: joining a
 * part of many MiB into one buffer would copy it once more). */
async function readBodyChunks(req) {
  const chunks = [];
  await eachBodyPiece(req, chunk => chunks.push(chunk));
  return chunks;
}

const readBody = async req => Buffer.concat(await readBodyChunks(req));

/*
 * Hashing a large request body (SHA-256 against the signed payload hash,
 * MD5 for its ETag) runs on worker threads, so the event loop goes on
 * receiving and answering other requests meanwhile. The body is copied
 * once, as it arrives, into a pooled buffer; the buffer moves to a worker
 * (a transfer, not a copy) and back, and the store writes from it.
 */
const HASH_WORKERS = 2;
const HASH_OFF_LOOP_BYTES = 1 << 20;
const HASH_WORKER_SOURCE = `
const { parentPort } = require('worker_threads');
const crypto = require('crypto');
parentPort.on('message', ({ id, memory, length }) => {
  const body = Buffer.from(memory, 0, length);
  const sha256 = crypto.createHash('sha256').update(body).digest('hex');
  const md5 = crypto.createHash('md5').update(body).digest('hex');
  parentPort.postMessage({ id, sha256, md5, memory }, [memory]);
});
`;

class Hasher {
  constructor(count) {
    this.workers = [];
    this.turn = 0;
    this.seq = 0;
    for (let i = 0; i < count; i++) {
      const worker = new Worker(HASH_WORKER_SOURCE, { eval: true });
      const pending = new Map();
      worker.on('message', ({ id, sha256, md5, memory }) => {
        pending.get(id).resolve({ sha256, md5, memory });
        pending.delete(id);
      });
      worker.on('error', err => {
        for (const waiter of pending.values()) waiter.reject(err);
        pending.clear();
      });
      worker.unref();
      this.workers.push({ worker, pending });
    }
  }

  /* {sha256, md5} in hex of body (a Buffer at the start of its own
   * ArrayBuffer, which is moved to the worker meanwhile) and body again. */
  async hash(body) {
    const { worker, pending } = this.workers[this.turn++ % this.workers.length];
    const id = this.seq++;
    const length = body.length;
    const { sha256, md5, memory } = await new Promise((resolve, reject) => {
      pending.set(id, { resolve, reject });
      worker.postMessage({ id, memory: body.buffer, length }, [body.buffer]);
    });
    return { sha256, md5, body: Buffer.from(memory, 0, length) };
  }
}

let hasher = null;

/*
 * Buffers for large bodies, kept for reuse once the store has written
 * them: a fresh one is zeroed and faulted in page by page by the copy that
 * fills it, which costs more than the copy itself. Sizes are rounded up to
 * whole MiB; at most POOL_IDLE_BYTES wait idle.
 */
const POOL_UNIT = 1 << 20;
const POOL_IDLE_BYTES = 512 << 20;

class BufferPool {
  constructor() {
    this.idle = new Map();
    this.idleBytes = 0;
  }

  /* A Buffer of length bytes at the start of an ArrayBuffer of its own. */
  take(length) {
    const size = Math.max(POOL_UNIT, Math.ceil(length / POOL_UNIT) * POOL_UNIT);
    const list = this.idle.get(size);
    let memory;
    if (list && list.length) {
      this.idleBytes -= size;
      memory = list.pop();
    } else {
      memory = new ArrayBuffer(size);
    }
    return Buffer.from(memory, 0, length);
  }

  give(body) {
    const memory = body.buffer;
    if (this.idleBytes + memory.byteLength > POOL_IDLE_BYTES) return;
    if (!this.idle.has(memory.byteLength)) this.idle.set(memory.byteLength, []);
    this.idle.get(memory.byteLength).push(memory);
    this.idleBytes += memory.byteLength;
  }
}

const bodyBuffers = new BufferPool();

/* A body of a known length, copied piece by piece as it arrives into a
 * pooled buffer (the pieces are garbage at once instead of living until
 * the body is whole). */
async function readBodyPooled(req, length) {
  const body = bodyBuffers.take(length);
  let at = 0;
  await eachBodyPiece(req, chunk => {
    if (at + chunk.length <= length) at += chunk.copy(body, at);
    else at = length + 1;
  });
  if (at !== length) throw new S3Fail(400, 'IncompleteBody', 'The request body does not match its Content-Length');
  return body;
}

/* The body of a signed request, read and hashed: {chunks, sha256, md5,
 * release}, where release() hands a pooled buffer back once the body is
 * stored. A small body is hashed here, a large one on a worker (its MD5
 * then comes along). */
async function readSignedBody(req) {
  const length = Number(req.headers['content-length']);
  let body;
  if (length >= HASH_OFF_LOOP_BYTES) {
    body = await readBodyPooled(req, length);
  } else {
    const chunks = await readBodyChunks(req);
    const total = chunks.reduce((n, chunk) => n + chunk.length, 0);
    if (total < HASH_OFF_LOOP_BYTES) {
      const sha = crypto.createHash('sha256');
      for (const chunk of chunks) sha.update(chunk);
      return { sha256: sha.digest('hex'), md5: null, chunks, release: null };
    }
    body = bodyBuffers.take(total);
    let at = 0;
    for (const chunk of chunks) at += chunk.copy(body, at);
  }
  hasher = hasher || new Hasher(HASH_WORKERS);
  const hashed = await hasher.hash(body);
  return { sha256: hashed.sha256, md5: hashed.md5, chunks: [hashed.body],
    release: () => bodyBuffers.give(hashed.body) };
}

/* Hands s3rver a fresh stream holding a body this middleware has already
 * read, with its MD5 when known (the store's writes then skip hashing) and
 * what to call once the store has written it. */
function replayBody(ctx, chunks, md5 = null, release = null) {
  const original = ctx.req;
  const replay = new PassThrough();
  for (const name of ['headers', 'rawHeaders', 'method', 'url', 'httpVersion',
    'httpVersionMajor', 'httpVersionMinor', 'socket']) {
    replay[name] = original[name];
  }
  if (md5) replay.bodyMd5 = md5;
  if (release) replay.stored = release;
  replay.bodyChunks = chunks;
  for (const chunk of chunks) replay.write(chunk);
  replay.end();
  ctx.req = ctx.request.req = ctx.response.req = replay;
}

// ---------------------------------------------------------------------------
// What s3rver lacks: conditional writes, multipart checks and abort, suffix ranges

/* Bucket and key of a path-style request, decoded. */
function bucketAndKey(rawUrl) {
  const pathPart = rawUrl.split('?')[0].slice(1);
  const slash = pathPart.indexOf('/');
  if (slash < 0) return { bucket: percentDecode(pathPart).toString(), key: '' };
  return {
    bucket: percentDecode(pathPart.slice(0, slash)).toString(),
    key: percentDecode(pathPart.slice(slash + 1)).toString(),
  };
}

/* Names the object operations this middleware adds to; null for the rest. */
function operationOf(method, key, query, headers) {
  if (!key) return null;
  const has = name => Object.prototype.hasOwnProperty.call(query, name);
  const plain = Object.keys(query).every(name => /^x-amz-/i.test(name));
  if (method === 'PUT' && has('uploadId')) return 'UploadPart';
  if (method === 'PUT' && plain && !headers['x-amz-copy-source']) return 'PutObject';
  if (method === 'POST' && has('uploadId')) return 'CompleteMultipartUpload';
  if (method === 'DELETE' && has('uploadId')) return 'AbortMultipartUpload';
  if ((method === 'GET' || method === 'HEAD') && /^bytes=-\d+$/.test(headers.range || '')) return 'SuffixRangeGet';
  return null;
}

const noSuchUpload = uploadId => new S3Fail(404, 'NoSuchUpload',
  'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
  { UploadId: uploadId });

/*
 * s3rver writes an object (or a part) in place and answers once the last
 * byte has gone into its write stream, not once the file holds it: a read
 * right after a write could find the object short, and a read during an
 * overwrite a mix of old and new. S3 shows a write whole or not at all,
 * so the store's writes are replaced by ones that write a temporary file
 * beside the target, wait until it is written, and rename it into place.
 * (s3rver lists only files named *._S3rver_object, so the temporary file
 * never shows.)
 */
async function writeWhole(file, content) {
  const known = typeof content.bodyMd5 === 'string' ? content.bodyMd5 : null;
  const md5 = known ? null : crypto.createHash('md5');
  let size = 0;
  const count = new Transform({
    transform(chunk, encoding, done) {
      if (md5) md5.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  await viaTemporary(file, tmp => pipeline(
    Buffer.isBuffer(content) ? Readable.from([content]) : content, count, fs.createWriteStream(tmp)));
  if (typeof content.stored === 'function') content.stored();
  return { size, md5: known || md5.digest('hex') };
}

/* Runs write(tmp) on a temporary file beside file, then renames it into
 * place; on failure removes it. With ifAbsent the temporary file is linked
 * to file instead, so a file already there stays as it is (and nothing is
 * thrown for it). */
async function viaTemporary(file, write, { ifAbsent = false } = {}) {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${crypto.randomBytes(6).toString('hex')}.writing`;
  try {
    await write(tmp);
    if (!ifAbsent) {
      await fs.promises.rename(tmp, file);
      return;
    }
    await fs.promises.link(tmp, file).catch(err => {
      if (err.code !== 'EEXIST') throw err;
    });
    await fs.promises.rm(tmp, { force: true });
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
}

/* Copies segments [{file, start, size}] one after another into file,
 * through one reused buffer; returns the joined size. */
async function joinSegments(file, segments) {
  const buffer = Buffer.allocUnsafe(8 << 20);
  let size = 0;
  await viaTemporary(file, async tmp => {
    const out = await fs.promises.open(tmp, 'w');
    try {
      for (const segment of segments) {
        const input = await fs.promises.open(segment.file, 'r');
        try {
          for (let done = 0; done < segment.size;) {
            const want = Math.min(buffer.length, segment.size - done);
            const { bytesRead } = await input.read(buffer, 0, want, segment.start + done);
            if (bytesRead === 0) throw new Error(`${segment.file}: ends before byte ${segment.start + segment.size}`);
            await out.write(buffer, 0, bytesRead);
            done += bytesRead;
          }
        } finally {
          await input.close();
        }
        size += segment.size;
      }
    } finally {
      await out.close();
    }
  });
  return size;
}

/* S3's ETag of a multipart object: the MD5 of the parts' binary MD5s, a
 * dash, and the number of parts. */
function multipartEtag(partMd5s) {
  const digests = Buffer.concat(partMd5s.map(md5 => Buffer.from(md5, 'hex')));
  return `${crypto.createHash('md5').update(digests).digest('hex')}-${partMd5s.length}`;
}

/*
 * s3rver streams an object from its file in 64 KiB reads, each one a trip
 * through the thread pool and a socket write on the event loop. Reads of
 * READ_CHUNK bytes serve a large GET with a sixteenth of those trips.
 */
const READ_CHUNK = 1 << 20;

function largeReads(store) {
  store.getObject = async (bucket, key, options) => {
    const ranged = options && (options.start !== undefined || options.end);
    try {
      const metadata = await store.getMetadata(bucket, key);
      const lastByte = Math.max(0, Number(metadata['content-length']) - 1);
      const range = {
        start: (options && options.start) || 0,
        end: Math.min((options && options.end) || Infinity, lastByte),
      };
      const content = range.start < 0 || range.end < range.start ? null : await new Promise((resolve, reject) => {
        const stream = fs.createReadStream(store.getResourcePath(bucket, key, 'object'),
          { ...range, highWaterMark: READ_CHUNK })
          .on('error', reject)
          .on('open', () => resolve(stream));
      });
      const object = new S3Object(bucket, key, content, metadata);
      if (ranged) object.range = range;
      return object;
    } catch (err) {
      if (err.code === 'ENOENT') return null;
      throw err;
    }
  };
}

function atomicWrites(store) {
  store.putObject = async object => {
    const result = await writeWhole(store.getResourcePath(object.bucket, object.key, 'object'), object.content);
    await store.putMetadata(object.bucket, object.key, object.metadata, result.md5);
    return result;
  };
  store.putPart = async (bucket, uploadId, partNumber, content) => {
    const dir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    const inSlot = await writeSlot(dir, partNumber, content);
    if (inSlot) return inSlot;
    const file = path.join(dir, String(partNumber));
    const result = await writeWhole(file, content);
    await fs.promises.writeFile(`${file}.md5`, result.md5);
    await fs.promises.rm(`${file}.slot`, { force: true }); // the newer upload wins
    return result;
  };
  /*
   * Completion renames the assembly into place when parts 1..k all lie in
   * their slots, each but the last a stride long; otherwise it copies the
   * parts together. The ETag comes from the parts' digests (checked
   * against the client's list before s3rver runs), so the joined bytes
   * are not hashed again: s3rver's own completion computed an MD5 of the
   * whole object only for it to be replaced.
   */
  store.putObjectMultipart = async (bucket, uploadId, parts) => {
    const dir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
    const [key, metadata, stride] = await Promise.all([
      fs.promises.readFile(path.join(dir, 'key'), 'utf8'),
      fs.promises.readFile(path.join(dir, 'metadata'), 'utf8').then(JSON.parse),
      uploadStride(dir),
    ]);
    const sorted = [...parts].sort((a, b) => a.number - b.number);
    const stored = await Promise.all(sorted.map(part => storedPart(dir, part.number)));
    const object = store.getResourcePath(bucket, key, 'object');
    const assembly = path.join(dir, ASSEMBLY);
    const last = sorted.length - 1;
    const inPlace = stored.every((part, i) => part && part.slot && sorted[i].number === i + 1 &&
      (i === last ? part.size <= stride : part.size === stride));
    let size;
    if (inPlace) {
      size = last * stride + stored[last].size;
      await fs.promises.truncate(assembly, size);
      await fs.promises.mkdir(path.dirname(object), { recursive: true });
      await fs.promises.rename(assembly, object);
    } else {
      size = await joinSegments(object, sorted.map((part, i) => (stored[i].slot
        ? { file: assembly, start: (part.number - 1) * stride, size: stored[i].size }
        : { file: path.join(dir, String(part.number)), start: 0, size: stored[i].size })));
    }
    const md5 = multipartEtag(sorted.map(part => part.etag.toLowerCase()));
    await store.putMetadata(bucket, key, metadata, md5);
    await fs.promises.rm(dir, { recursive: true, force: true });
    strides.delete(dir);
    return { size, md5 };
  };
}

/*
 * Parts of a multipart upload are written straight into one file, the
 * upload's assembly, part n at (n - 1) x stride: the stride is the size of
 * the first part of at least MIN_PART_SIZE to arrive (clients use one part
 * size). Completion then has nothing to copy. A part goes to a file of its
 * own instead when it is longer than the stride, arrives before the
 * stride is known, or is uploaded again over one already stored (a slot is
 * written only while it holds no stored part, so no failed write spoils
 * one). A part in a slot exists once its record "<n>.slot" (size and MD5)
 * is written; a part file "<n>" beside it is the newer upload.
 */
const ASSEMBLY = 'assembly';
const strides = new Map(); // upload folder -> stride
const slotsBusy = new Set(); // "<folder>/<n>" while a slot is written

/* The upload's stride, fixed by a part of `size` when none is yet; null
 * while unknown. The file "stride" is created whole or not at all, and
 * only if absent, so concurrent parts agree on it. */
async function uploadStride(dir, size = 0) {
  if (strides.has(dir)) return strides.get(dir);
  const file = path.join(dir, 'stride');
  if (size >= MIN_PART_SIZE) {
    await viaTemporary(file, tmp => fs.promises.writeFile(tmp, String(size)), { ifAbsent: true });
  }
  let text;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    return null;
  }
  strides.set(dir, Number(text));
  return strides.get(dir);
}

/* Writes part n into its slot when it fits there: {size, md5}, or null
 * when it goes to a file of its own. */
async function writeSlot(dir, n, content) {
  const chunks = content.bodyChunks;
  if (!chunks) return null;
  const size = chunks.reduce((total, chunk) => total + chunk.length, 0);
  const busy = `${dir}/${n}`;
  const stride = await uploadStride(dir, size);
  if (stride === null || size > stride || slotsBusy.has(busy)) return null;
  slotsBusy.add(busy);
  try {
    if (await storedPart(dir, n)) return null;
    let md5 = content.bodyMd5;
    if (!md5) {
      const hash = crypto.createHash('md5');
      for (const chunk of chunks) hash.update(chunk);
      md5 = hash.digest('hex');
    }
    const out = await fs.promises.open(path.join(dir, ASSEMBLY), fs.constants.O_WRONLY | fs.constants.O_CREAT);
    try {
      let at = (n - 1) * stride;
      for (const chunk of chunks) {
        for (let done = 0; done < chunk.length;) {
          const { bytesWritten } = await out.write(chunk, done, chunk.length - done, at + done);
          done += bytesWritten;
        }
        at += chunk.length;
      }
    } finally {
      await out.close();
    }
    await viaTemporary(path.join(dir, `${n}.slot`), tmp => fs.promises.writeFile(tmp, JSON.stringify({ size, md5 })));
    if (typeof content.stored === 'function') content.stored();
    return { size, md5 };
  } finally {
    slotsBusy.delete(busy);
  }
}

/* Part n as stored: {size, md5, slot}, or null when there is none. */
async function storedPart(dir, n) {
  const file = path.join(dir, String(n));
  try {
    const [stat, md5] = await Promise.all([fs.promises.stat(file), fs.promises.readFile(`${file}.md5`, 'utf8')]);
    return { size: stat.size, md5, slot: false };
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  try {
    return { ...JSON.parse(await fs.promises.readFile(`${file}.slot`, 'utf8')), slot: true };
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    return null;
  }
}

/* The folder where s3rver keeps an upload's parts, after checking it belongs to key. */
async function uploadDir(store, bucket, key, uploadId) {
  if (typeof uploadId !== 'string' || !/^[A-Za-z0-9_-]+$/.test(uploadId)) throw noSuchUpload(uploadId);
  const dir = path.join(store.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  let owner;
  try {
    owner = await fs.promises.readFile(path.join(dir, 'key'), 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT') throw noSuchUpload(uploadId);
    throw err;
  }
  if (owner !== key) throw noSuchUpload(uploadId);
  return dir;
}

function decodeXmlText(text) {
  const named = { quot: '"', amp: '&', lt: '<', gt: '>', apos: "'" };
  return text.replace(/&(#x[0-9a-fA-F]+|#\d+|quot|amp|lt|gt|apos);/g, (_, ref) =>
    ref[0] !== '#' ? named[ref]
      : String.fromCodePoint(ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10)));
}

/* The parts listed in a CompleteMultipartUpload body: [{number, etag}]. */
function parseCompleteBody(xml) {
  const malformedXml = new S3Fail(400, 'MalformedXML',
    'The XML you provided was not well-formed or did not validate against our published schema');
  if (!/<CompleteMultipartUpload[\s>]/.test(xml)) throw malformedXml;
  const parts = [];
  for (const [, inner] of xml.matchAll(/<Part>([\s\S]*?)<\/Part>/g)) {
    const number = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(inner);
    const etag = /<ETag>([\s\S]*?)<\/ETag>/.exec(inner);
    if (!number || !etag) throw malformedXml;
    parts.push({ number: Number(number[1]), etag: decodeXmlText(etag[1]).trim().replace(/"/g, '') });
  }
  if (parts.length === 0) throw malformedXml;
  return parts;
}

/* Checks the listed parts against the stored ones as S3 does. */
async function checkParts(dir, parts) {
  for (let i = 1; i < parts.length; i++) {
    if (parts[i].number <= parts[i - 1].number) {
      throw new S3Fail(400, 'InvalidPartOrder', 'The list of parts was not in ascending order. ' +
        'The parts list must be specified in order by part number.');
    }
  }
  const stored = await Promise.all(parts.map(part => storedPart(dir, part.number)));
  parts.forEach((part, i) => {
    if (!stored[i] || stored[i].md5 !== part.etag.toLowerCase()) {
      throw new S3Fail(400, 'InvalidPart', 'One or more of the specified parts could not be found. ' +
        "The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
      { PartNumber: part.number, ETag: part.etag });
    }
  });
  stored.slice(0, -1).forEach(({ size }, i) => {
    if (size < MIN_PART_SIZE) {
      throw new S3Fail(400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.',
        { PartNumber: parts[i].number, ProposedSize: size, MinSizeAllowed: MIN_PART_SIZE });
    }
  });
}

/*
 * Evaluates If-None-Match / If-Match on a write. Returns true when the write
 * is conditional, so the caller can mark the key busy until it finishes.
 */
async function checkPreconditions(ctx, store, bucket, key, busyKeys) {
  const noneMatch = ctx.get('if-none-match');
  const match = ctx.get('if-match');
  if (!noneMatch && !match) return false;
  if (noneMatch && noneMatch !== '*') {
    throw new S3Fail(501, 'NotImplemented', 'If-None-Match on a write only supports "*"');
  }
  if (busyKeys.has(`${bucket}/${key}`)) {
    throw new S3Fail(409, 'ConditionalRequestConflict',
      'A conflicting conditional operation is currently in progress against this resource. Please try again.');
  }
  busyKeys.add(`${bucket}/${key}`);
  try {
    if (noneMatch) {
      if (await store.existsObject(bucket, key)) {
        throw new S3Fail(412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold',
          { Condition: 'If-None-Match' });
      }
    } else {
      let current;
      try {
        current = (await store.getMetadata(bucket, key)).etag;
      } catch (err) {
        if (err.code !== 'ENOENT') throw err;
        throw new S3Fail(404, 'NoSuchKey', 'The specified key does not exist.', { Key: key });
      }
      if (current.replace(/"/g, '') !== match.replace(/"/g, '').trim()) {
        throw new S3Fail(412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold',
          { Condition: 'If-Match' });
      }
    }
  } catch (err) {
    busyKeys.delete(`${bucket}/${key}`);
    throw err;
  }
  return true;
}

// ---------------------------------------------------------------------------
// Responses

function xmlEscape(value) {
  return String(value).replace(/[&<>"']/g, ch => `&#${ch.charCodeAt(0)};`);
}

function sendError(ctx, err, requestId) {
  for (const name of ctx.res.getHeaderNames()) {
    if (!name.startsWith('x-amz-')) ctx.res.removeHeader(name);
  }
  const detail = Object.entries(err.detail || {})
    .filter(([name, value]) => /^[A-Za-z]+$/.test(name) && ['string', 'number'].includes(typeof value))
    .map(([name, value]) => `<${name}>${xmlEscape(value)}</${name}>`).join('');
  ctx.status = err.status;
  ctx.type = 'application/xml';
  ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${xmlEscape(err.code)}</Code><Message>${xmlEscape(err.message)}</Message>${detail}` +
    `<RequestId>${requestId}</RequestId><HostId>${xmlEscape(ctx.response.get('x-amz-id-2'))}</HostId></Error>`;
}

function sendJson(ctx, status, value) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(value) + '\n';
}

function isLoopback(address) {
  return /^(127\.|::1$|::ffff:127\.)/.test(address || '');
}

// ---------------------------------------------------------------------------
// The middleware

function spotrunMiddleware(cfg) {
  const { store, faults, stats, busyKeys } = cfg;

  async function control(ctx) {
    if (!isLoopback(ctx.req.socket.remoteAddress)) {
      return sendJson(ctx, 403, { error: 'the control endpoint only answers loopback clients' });
    }
    const route = `${ctx.method} ${ctx.path}`;
    if (route === 'GET /__spotrun/stats') {
      return sendJson(ctx, 200, { ...stats, conditional_writes_in_flight: busyKeys.size });
    }
    if (route === 'GET /__spotrun/faults') return sendJson(ctx, 200, faults.settings());
    if (route === 'PUT /__spotrun/faults') {
      let body;
      try {
        body = JSON.parse((await readBody(ctx.req)).toString('utf8'));
      } catch (err) {
        return sendJson(ctx, 400, { error: `body is not JSON: ${err.message}` });
      }
      try {
        faults.update(body);
      } catch (err) {
        return sendJson(ctx, 400, { error: err.message });
      }
      return sendJson(ctx, 200, faults.settings());
    }
    return sendJson(ctx, 404, { error: `no such control route: ${route}` });
  }

  /* Runs before s3rver: true when the request was answered here. */
  async function before(ctx, op, where, body) {
    const { bucket, key } = where;
    const uploadId = ctx.query.uploadId;
    if (op === 'AbortMultipartUpload') {
      const dir = await uploadDir(store, bucket, key, uploadId);
      await fs.promises.rm(dir, { recursive: true, force: true });
      strides.delete(dir);
      ctx.status = 204;
      return true;
    }
    if (op === 'UploadPart') {
      const number = Number(ctx.query.partNumber);
      if (!Number.isInteger(number) || number < 1 || number > MAX_PART_NUMBER) {
        throw new S3Fail(400, 'InvalidArgument',
          `Part number must be an integer between 1 and ${MAX_PART_NUMBER}, inclusive`,
          { ArgumentName: 'partNumber', ArgumentValue: String(ctx.query.partNumber) });
      }
      await uploadDir(store, bucket, key, uploadId);
    }
    if (op === 'CompleteMultipartUpload') {
      const dir = await uploadDir(store, bucket, key, uploadId);
      await checkParts(dir, parseCompleteBody(body.toString('utf8')));
    }
    if (op === 'SuffixRangeGet') {
      const wanted = Number(ctx.get('range').slice('bytes=-'.length));
      let size;
      try {
        size = Number((await store.getMetadata(bucket, key))['content-length']);
      } catch (err) {
        if (err.code !== 'ENOENT') throw err;
        return false; // s3rver answers NoSuchKey / NoSuchBucket
      }
      if (wanted === 0 || size === 0) {
        throw new S3Fail(416, 'InvalidRange', 'The requested range is not satisfiable',
          { RangeRequested: ctx.get('range'), ActualObjectSize: size });
      }
      ctx.req.headers.range = `bytes=${Math.max(0, size - wanted)}-${size - 1}`;
    }
    return false;
  }

  async function s3Request(ctx, next, fault) {
    if (fault === 'slowdown') throw new S3Fail(503, 'SlowDown', 'Please reduce your request rate.');
    if (fault === '500') throw new S3Fail(500, 'InternalError', 'We encountered an internal error. Please try again.');
    if (fault === 'slow') await new Promise(resolve => setTimeout(resolve, faults.slowMs));

    let payloadHash;
    try {
      payloadHash = authenticate(ctx, cfg);
    } catch (err) {
      stats.auth_failures++;
      throw err;
    }
    const where = bucketAndKey(ctx.req.url);
    const op = operationOf(ctx.method, where.key, ctx.query, ctx.req.headers);
    let body = null;
    // a GET or HEAD signed over its empty body has nothing to read or replay
    const signedEmpty = payloadHash === EMPTY_SHA256 &&
      !('content-length' in ctx.req.headers || 'transfer-encoding' in ctx.req.headers);
    if ((payloadHash && !signedEmpty) || op === 'CompleteMultipartUpload') {
      let chunks, md5 = null, release = null;
      if (payloadHash) {
        let computed;
        ({ sha256: computed, md5, chunks, release } = await readSignedBody(ctx.req));
        if (computed !== payloadHash) {
          throw new S3Fail(400, 'XAmzContentSHA256Mismatch',
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            { ClientComputedContentSHA256: payloadHash, S3ComputedContentSHA256: computed });
        }
      } else {
        chunks = await readBodyChunks(ctx.req);
      }
      if (op === 'CompleteMultipartUpload') body = Buffer.concat(chunks);
      replayBody(ctx, chunks, md5, release);
    }
    if (await before(ctx, op, where, body)) return;

    const writes = op === 'PutObject' || op === 'CompleteMultipartUpload';
    const conditional = writes && await checkPreconditions(ctx, store, where.bucket, where.key, busyKeys);
    try {
      await next();
    } finally {
      if (conditional) busyKeys.delete(`${where.bucket}/${where.key}`);
    }
  }

  return async function spotrun(ctx, next) {
    const started = Date.now();
    const requestId = crypto.randomBytes(8).toString('hex').toUpperCase();
    ctx.set('x-amz-request-id', requestId);
    ctx.set('x-amz-id-2', crypto.randomBytes(24).toString('base64'));
    if (ctx.path.startsWith(CONTROL_PREFIX)) return control(ctx);

    stats.requests++;
    const fault = faults.next();
    if (fault) stats.faults[fault]++;
    if (fault === 'reset') {
      ctx.respond = false;
      ctx.req.socket.resetAndDestroy();
      if (cfg.verbose) process.stderr.write(`${ctx.method} ${ctx.url} -> reset fault=reset\n`);
      return;
    }
    let code = '';
    try {
      await s3Request(ctx, next, fault);
    } catch (err) {
      if (!(err.code && Number.isInteger(err.status))) {
        process.stderr.write(`s3server: ${ctx.method} ${ctx.url}: ${err.stack || err}\n`);
        err = new S3Fail(500, 'InternalError', 'We encountered an internal error. Please try again.');
      }
      code = ` ${err.code}`;
      sendError(ctx, err, requestId);
    }
    stats.status[ctx.status] = (stats.status[ctx.status] || 0) + 1;
    if (cfg.verbose) {
      process.stderr.write(`${ctx.method} ${ctx.url} -> ${ctx.status}${code} ${Date.now() - started}ms` +
        `${fault ? ` fault=${fault}` : ''}\n`);
    }
  };
}

// ---------------------------------------------------------------------------
// Start-up

/* s3rver's ListObjectsV2 continuation tokens use DES, which Node 20 only has with the legacy provider. */
function requireLegacyProvider() {
  try {
    crypto.createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8));
  } catch {
    throw new Error('DES is unavailable: run node with --openssl-legacy-provider ' +
      '(s3rver needs it for ListObjectsV2 continuation tokens)');
  }
}

function endpointOf(host, port, scheme) {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `${scheme}://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.help) {
    process.stdout.write(USAGE);
    return;
  }
  requireLegacyProvider();
  fs.mkdirSync(opts.dir, { recursive: true });

  // s3rver still checks access keys itself: accept exactly ours.
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  const credentials = new Map();
  opts.accessKeys.forEach((accessKey, i) => {
    credentials.set(accessKey, opts.secretKeys[i]);
    AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKey, opts.secretKeys[i]);
  });

  const server = new S3rver({
    directory: opts.dir,
    silent: true,
    vhostBuckets: false,
    configureBuckets: opts.buckets.map(name => ({ name, configs: [] })),
  });
  const cfg = {
    store: server.store,
    credentials,
    region: opts.region,
    verbose: opts.verbose,
    faults: new Faults({ rate: opts.faultRate, faults: opts.faults, slowMs: opts.slowMs, seed: opts.seed }),
    stats: {
      requests: 0,
      faults: Object.fromEntries(FAULT_KINDS.map(kind => [kind, 0])),
      auth_failures: 0,
      status: {},
    },
    busyKeys: new Set(),
  };
  atomicWrites(server.store);
  largeReads(server.store);
  /* silent, s3rver still formats a log line for every request and hands it
   * to a muted logger: about a third of a millisecond of the event loop per
   * request. --verbose logs requests here instead. */
  server.middleware = server.middleware.filter(fn => fn.name !== 'logger');
  server.middleware.unshift(spotrunMiddleware(cfg));

  await server.configureBuckets();
  const httpServer = opts.tlsCert
    ? https.createServer({ cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) }, server.callback())
    : http.createServer(server.callback());
  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(opts.port, opts.host, resolve);
  });
  const { port } = httpServer.address();
  const shutdown = () => {
    httpServer.close(() => process.exit(0));
    httpServer.closeAllConnections();
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  if (opts.portFile) {
    fs.writeFileSync(`${opts.portFile}.tmp`, `${port}\n`);
    fs.renameSync(`${opts.portFile}.tmp`, opts.portFile);
  }
  process.stdout.write(JSON.stringify({ ready: true, port, endpoint: endpointOf(opts.host, port, opts.tlsCert ? 'https' : 'http') }) + '\n');
}

main().catch(err => {
  if (err instanceof UsageError) {
    process.stderr.write(`s3server: ${err.message} (see --help)\n`);
    process.exit(2);
  }
  process.stderr.write(`s3server: ${err.message}\n`);
  process.exit(1);
});
