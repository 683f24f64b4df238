'use strict';

// Test helpers: a stand-in for mtactl on 127.0.0.1, a logger that records, a spool folder per test.
// (node --test also runs this file; it defines no tests.)

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

const { parseSettings } = require('../lib/settings');
const { Shipper } = require('../lib/shipper');

/**
 * An HTTP server on 127.0.0.1 that records every request and answers with `answer(request, index)`:
 * {status, body?, headers?}, or 'hang' (never answers), or 'drop' (closes the connection).
 */
async function fakeMtactl(answer = () => accepted()) {
    const requests = [];
    const hanging = [];
    const server = http.createServer((req, res) => {
        const chunks = [];
        req.on('data', chunk => chunks.push(chunk));
        req.on('end', () => {
            const request = {
                method: req.method,
                url: req.url,
                headers: req.headers,
                body: Buffer.concat(chunks).toString('utf8'),
                at: Date.now()
            };
            requests.push(request);
            const reply = fake.answer(request, requests.length - 1);
            if (reply === 'hang') {
                hanging.push(res);
                return;
            }
            if (reply === 'drop') {
                req.socket.destroy();
                return;
            }
            res.writeHead(reply.status, { 'Content-Type': 'application/json', ...(reply.headers || {}) });
            res.end(reply.body === undefined ? '{}' : reply.body);
        });
    });
    await listen(server, 0);
    const port = server.address().port;
    const fake = {
        answer,
        requests,
        port,
        url: `http://127.0.0.1:${port}`,
        batches: () => requests.map(request => JSON.parse(request.body)),
        async close() {
            hanging.forEach(res => res.destroy());
            server.closeAllConnections && server.closeAllConnections();
            await new Promise(resolve => server.close(resolve));
        },
        // listen again on the same port, as mtactl coming back would
        async reopen() {
            await listen(server, port);
        }
    };
    return fake;
}

function listen(server, port) {
    return new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
            server.removeListener('error', reject);
            resolve();
        });
    });
}

/** mtactl's 202 for a batch of `n` entries */
function accepted(body) {
    return { status: 202, body: body || '{"accepted": 1, "duplicates": 0, "rejected": []}' };
}

function recordingLogger() {
    const lines = [];
    const log = level => (prefix, format, ...args) => lines.push({ level, prefix, text: require('util').format(format, ...args) });
    return { lines, info: log('info'), warn: log('warn'), error: log('error'), verbose: log('verbose'), at: level => lines.filter(l => l.level === level) };
}

function tempDir(t) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zonemta-mtactl-test-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));
    return dir;
}

function settingsFor(url, spoolPath, overrides = {}) {
    return parseSettings({
        url,
        apiKey: 'mq_live_test',
        spoolPath,
        node: 'zmta-test-1',
        flushIntervalMs: 60000, // tests flush explicitly unless they test the interval
        replayIntervalMs: 60000,
        retryBaseMs: 10,
        retryMaxMs: 50,
        timeoutMs: 2000,
        ...overrides
    }).settings;
}

/** A started Shipper against `url`, closed when the test ends. */
function startShipper(t, url, dir, overrides = {}) {
    const logger = recordingLogger();
    const shipper = new Shipper(settingsFor(url, dir, overrides), {
        logger,
        logPrefix: 'MTACTL/test',
        context: 'sender',
        spool: { adoptGraceMs: 0 }
    });
    shipper.start();
    // The shipper's timers are unref'd (it never holds ZoneMTA's process open); the test must stay alive meanwhile.
    const keepAlive = setInterval(() => {}, 1000);
    t.after(async () => {
        await shipper.close();
        clearInterval(keepAlive);
    });
    return { shipper, logger };
}

async function waitFor(predicate, what, timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
        if (Date.now() > deadline) {
            throw new Error(`timed out waiting for ${what}`);
        }
        await new Promise(resolve => setTimeout(resolve, 5));
    }
}

/** Log entries shaped like ZoneMTA's (see /work/shared/fixtures/zonemta/events). */
function logEntry(n, action = 'ACCEPTED') {
    return {
        id: `18b0879811a0000${String(n).padStart(3, '0')}`,
        seq: '001',
        action,
        zone: 'default',
        from: 'news@sender.example',
        to: `user${n}@example.com`,
        response: '250 2.0.0 Ok: queued',
        start: 1795414203120 + n
    };
}

function spoolFiles(dir) {
    return fs.readdirSync(dir).filter(name => name.endsWith('.jsonl') && name !== 'refused.jsonl');
}

function spooledLines(dir) {
    return spoolFiles(dir)
        .sort()
        .flatMap(name => fs.readFileSync(path.join(dir, name), 'utf8').split('\n').filter(Boolean));
}

module.exports = { fakeMtactl, accepted, recordingLogger, tempDir, settingsFor, startShipper, waitFor, logEntry, spoolFiles, spooledLines };
