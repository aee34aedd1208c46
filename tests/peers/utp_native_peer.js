#!/usr/bin/env node
// A small command-line peer over utp-native (libutp inside), for txutp interop tests.
//
//   node utp_native_peer.js listen PORT MODE [ARG] [options]
//   node utp_native_peer.js connect HOST PORT MODE [ARG] [options]
//
// MODE:
//   sink            read everything until the peer ends; report bytes and sha256
//   source N        write N bytes of the interop stream, then end (half-close); incoming
//                   bytes are read and discarded (counted)
//   echo            write back everything received; end when the peer ends
//   pingpong N      write N stream bytes and end, read everything back until the peer
//                   ends, and check that what came back is what was sent
//   reset-after N   read; once N bytes have arrived, destroy the connection abruptly
//                   (see "RESET" below)
//
// Options:
//   --host ADDR       address to listen on (default 127.0.0.1)
//   --bufsize BYTES   SO_RCVBUF/SO_SNDBUF of the UDP socket (default 4194304; 0 = kernel default)
//   --linger SECONDS  keep the UDP socket (and libutp's context) open this long after the
//                     connection closed, so late packets are answered by libutp (with RESETs)
//                     (default 1; 5 for reset-after)
//   --timeout SECONDS give up (exit 4) if the whole run takes longer (default 300)
//   --idle SECONDS    source/pingpong: wait this long after the connection (a listener: after the
//                     client's first data) before writing, to exercise keep-alives (default 0)
//   --no-request      a connecting sink/reset-after does not send its "G" request byte: with a
//                     listener that waits for the client, nothing is ever sent (server-speaks-first)
//
// The interop stream: byte k = BLOCK[k % 1048573], where BLOCK is the first 1 048 573
// bytes of the SHA-256 chain h0 = sha256("txutp-interop-stream"), h(i+1) = sha256(h(i)).
// tests/peers/stream.py reproduces it in Python.
//
// libutp quirks respected here (see shared reference §2.4, §5.3):
//   * a libutp acceptor cannot send before the initiator's first DATA; utp-native corks the
//     accepted stream until then. So the *connecting* side always writes first: in `sink`
//     and `reset-after` modes it sends one request byte "G" (0x47); a connecting `sink` then
//     half-closes its write side at once (end()), which also exercises half-close. A
//     listening side must never wait for its own data to be read before the client speaks.
//   * allowHalfOpen is on (utp-native's default): after the peer's FIN we keep writing; after
//     our end() we keep reading. Every mode ends its own write side once it has nothing left
//     to send and the peer ended, so the connection then closes fully.
//   * RESET: libutp never sends ST_RESET on a live connection. `destroy()` (utp_close) sends a
//     FIN after the queued data, and once that FIN is acknowledged libutp forgets the
//     connection: every later packet from the peer is answered with an ST_RESET (conn_id =
//     the packet's id, i.e. the peer's send id; ack_nr = the packet's seq_nr). So in
//     `reset-after` mode a peer that keeps sending sees EOF, then a RESET. The UDP socket is
//     kept open for --linger seconds for that.
//
// Output: listen mode prints `READY <port>` once listening. Every run prints, at the end,
// one JSON line on stdout:
//   {"role","mode","bytes","sha256","stream_match","bytes_sent","peer_eof","error",
//    "seconds","mb_per_s", ...}
// where bytes/sha256 describe what was received, stream_match says whether it equals the
// first `bytes` bytes of the interop stream, and mb_per_s = the larger of bytes received or
// sent (10^6 bytes) / seconds from the connection to the peer's EOF (a source: to the close,
// when its FIN was acknowledged).
// Logs go to stderr. Exit status: 0 success; 2 usage; 3 connection error (e.g.
// UTP_ECONNRESET); 4 timeout; 5 pingpong mismatch.
'use strict'

const crypto = require('crypto')
const path = require('path')

let utp
try {
  utp = require(path.join(__dirname, 'node', 'node_modules', 'utp-native'))
} catch (err) {
  console.error('utp_native_peer: cannot load utp-native (run tests/peers/setup_peers.sh): ' + err.message)
  process.exit(2)
}

const PERIOD = 1048573
const SEED = 'txutp-interop-stream'
const CHUNK = 65536

function makeBlock () {
  const out = Buffer.alloc(PERIOD + 32)
  let h = crypto.createHash('sha256').update(SEED).digest()
  let off = 0
  while (off < PERIOD) {
    h.copy(out, off)
    off += 32
    h = crypto.createHash('sha256').update(h).digest()
  }
  return out.subarray(0, PERIOD)
}

const BLOCK = makeBlock()

function streamBytes (offset, n) {
  const out = Buffer.allocUnsafe(n)
  let pos = offset % PERIOD
  let done = 0
  while (done < n) {
    const take = Math.min(n - done, PERIOD - pos)
    BLOCK.copy(out, done, pos, pos + take)
    done += take
    pos = 0
  }
  return out
}

function streamSha256 (n) {
  const h = crypto.createHash('sha256')
  for (let off = 0; off < n; off += PERIOD) h.update(BLOCK.subarray(0, Math.min(PERIOD, n - off)))
  return h.digest('hex')
}

function usage (msg) {
  if (msg) console.error('utp_native_peer: ' + msg)
  console.error('usage: utp_native_peer.js listen PORT MODE [ARG] [--host A] [--bufsize B] [--linger S] [--timeout S]\n' +
    '       utp_native_peer.js connect HOST PORT MODE [ARG] [options]\n' +
    'MODE: sink | source N | echo | pingpong N | reset-after N')
  process.exit(2)
}

function parseArgs (argv) {
  const opts = { host: '127.0.0.1', bufsize: 4 * 1024 * 1024, linger: null, timeout: 300, idle: 0, request: true }
  const pos = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--no-request') {
      opts.request = false
    } else if (a.startsWith('--')) {
      const key = a.slice(2)
      if (!(key in opts) || key === 'request') usage('unknown option ' + a)
      const v = argv[++i]
      if (v === undefined) usage('missing value for ' + a)
      opts[key] = key === 'host' ? v : Number(v)
    } else {
      pos.push(a)
    }
  }
  const role = pos.shift()
  if (role === 'listen') {
    opts.port = Number(pos.shift())
  } else if (role === 'connect') {
    opts.remoteHost = pos.shift()
    opts.port = Number(pos.shift())
  } else {
    usage('first argument must be listen or connect')
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad port')
  opts.role = role
  opts.mode = pos.shift()
  if (['source', 'pingpong', 'reset-after'].includes(opts.mode)) {
    opts.n = Number(pos.shift())
    if (!Number.isInteger(opts.n) || opts.n < 0) usage(opts.mode + ' needs a byte count')
  } else if (!['sink', 'echo'].includes(opts.mode)) {
    usage('unknown mode ' + opts.mode)
  }
  if (pos.length) usage('unexpected arguments: ' + pos.join(' '))
  if (opts.linger === null) opts.linger = opts.mode === 'reset-after' ? 5 : 1
  return opts
}

const opts = parseArgs(process.argv.slice(2))
const log = (...a) => console.error('[utp-native ' + opts.role + ' ' + opts.mode + ']', ...a)

const result = {
  role: opts.role,
  mode: opts.mode,
  bytes: 0,
  sha256: null,
  stream_match: null,
  bytes_sent: 0,
  peer_eof: false,
  local_end: false,
  error: null,
  seconds: null,
  mb_per_s: null
}
const rxHash = crypto.createHash('sha256')
const txHash = crypto.createHash('sha256')
let t0 = null
let tDone = null
let sock = null
let finished = false

function finish (code) {
  if (finished) return
  finished = true
  if (t0 !== null) {
    const t1 = tDone !== null ? tDone : process.hrtime.bigint()
    result.seconds = Number(t1 - t0) / 1e9
    const moved = Math.max(result.bytes, result.bytes_sent)
    result.mb_per_s = result.seconds > 0 ? moved / 1e6 / result.seconds : null
  }
  result.sha256 = rxHash.digest('hex')
  result.stream_match = result.sha256 === streamSha256(result.bytes)
  if (opts.mode === 'pingpong') {
    result.sent_sha256 = txHash.digest('hex')
    result.echo_match = result.bytes === result.bytes_sent && result.sha256 === result.sent_sha256
    if (code === 0 && !result.echo_match) code = 5
  }
  process.stdout.write(JSON.stringify(result) + '\n')
  const exit = () => process.exit(code)
  if (sock) {
    try { sock.close(exit) } catch (e) { exit() }
    setTimeout(exit, 2000).unref()
  } else {
    exit()
  }
}

setTimeout(() => {
  result.error = 'timeout'
  log('timed out after ' + opts.timeout + ' s')
  finish(4)
}, opts.timeout * 1000).unref()

function writeStream (conn, total, onDone) {
  let offset = 0
  function pump () {
    while (offset < total) {
      const n = Math.min(CHUNK, total - offset)
      const buf = streamBytes(offset, n)
      offset += n
      result.bytes_sent += n
      if (opts.mode === 'pingpong') txHash.update(buf)
      if (!conn.write(buf)) {
        conn.once('drain', pump)
        return
      }
    }
    onDone()
  }
  pump()
}

function handle (conn) {
  t0 = process.hrtime.bigint()
  log('connected to ' + conn.remoteAddress + ':' + conn.remotePort)
  let wroteAll = false
  let received = 0

  const endLocal = () => {
    if (result.local_end) return
    result.local_end = true
    conn.end()
  }

  conn.on('data', (data) => {
    received += data.length
    result.bytes = received
    rxHash.update(data)
    if (opts.mode === 'echo') {
      conn.write(data)
      result.bytes_sent += data.length
    } else if (opts.mode === 'reset-after' && received >= opts.n && !conn.destroyed) {
      log('received ' + received + ' bytes: destroying the connection')
      tDone = process.hrtime.bigint()
      conn.destroy()
    }
  })
  conn.on('end', () => {
    result.peer_eof = true
    if (tDone === null && opts.mode !== 'source') tDone = process.hrtime.bigint()
    log('peer ended after ' + received + ' bytes')
    // Nothing more to send in these modes (source/pingpong end by themselves when done).
    if (opts.mode === 'sink' || opts.mode === 'echo' || opts.mode === 'reset-after') endLocal()
    else if (wroteAll) endLocal()
  })
  conn.on('error', (err) => {
    result.error = err.code || err.message
    log('error: ' + (err.code || err.message))
  })
  conn.on('close', () => {
    // A source is done when its FIN was acknowledged, i.e. every byte arrived.
    if (opts.mode === 'source' && tDone === null) tDone = process.hrtime.bigint()
    log('closed; lingering ' + opts.linger + ' s')
    const code = result.error ? 3 : 0
    setTimeout(() => finish(code), opts.linger * 1000)
  })

  const initiator = opts.role === 'connect'
  const startWriting = () => writeStream(conn, opts.n, () => {
    wroteAll = true
    endLocal()
  })
  if (opts.mode === 'source' || opts.mode === 'pingpong') {
    if (!opts.idle) {
      startWriting()
    } else if (initiator) {
      log('idle for ' + opts.idle + ' s before writing')
      setTimeout(startWriting, opts.idle * 1000)
    } else {
      conn.once('data', () => {
        log('idle for ' + opts.idle + ' s before writing')
        setTimeout(startWriting, opts.idle * 1000)
      })
    }
  } else if (initiator && opts.request && opts.mode === 'sink') {
    conn.write(Buffer.from('G')) // libutp acceptors cannot send before the initiator's first DATA
    endLocal()
  } else if (initiator && opts.request && opts.mode === 'reset-after') {
    conn.write(Buffer.from('G'))
  }
}

function setBuffers (s) {
  if (!opts.bufsize) return
  try {
    s.setRecvBufferSize(opts.bufsize)
    s.setSendBufferSize(opts.bufsize)
  } catch (err) {
    log('cannot set socket buffers: ' + err.message)
  }
}

if (opts.role === 'listen') {
  sock = utp.createServer({ allowHalfOpen: true })
  sock.maxConnections = 1 // serve exactly one connection
  sock.on('error', (err) => {
    result.error = err.code || err.message
    log('server error: ' + result.error)
    finish(3)
  })
  sock.once('connection', handle)
  sock.listen(opts.port, opts.host, () => {
    setBuffers(sock)
    process.stdout.write('READY ' + sock.address().port + '\n')
  })
} else {
  sock = utp({ allowHalfOpen: true })
  sock.on('error', (err) => {
    result.error = err.code || err.message
    log('socket error: ' + result.error)
    finish(3)
  })
  sock.bind(0, '0.0.0.0', () => {
    setBuffers(sock)
    const conn = sock.connect(opts.port, opts.remoteHost)
    conn.on('connect', () => {
      log('connect event')
    })
    handle(conn)
  })
}
