'use strict';

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');

const { fakeMtactl, accepted, tempDir, startShipper, logEntry, spooledLines } = require('./helpers');

test('a failing mtactl is retried with growing delays, the same bytes each time', async t => {
    const mtactl = await fakeMtactl((request, index) =>
        index === 0 ? { status: 503, body: '{"error": "database_unavailable"}' } : index === 1 ? 'drop' : index === 2 ? { status: 429 } : accepted()
    );
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 2, retryBaseMs: 40, retryMaxMs: 10000 });

    shipper.push(logEntry(1));
    shipper.push(logEntry(2));
    await shipper.flush();

    assert.equal(mtactl.requests.length, 4, '503, a dropped connection and 429 are retried');
    assert.equal(new Set(mtactl.requests.map(request => request.body)).size, 1, 'every attempt sends the same body');
    const gaps = mtactl.requests.slice(1).map((request, n) => request.at - mtactl.requests[n].at);
    // backoff n is between half and all of retryBaseMs * 2^n
    assert.ok(gaps[0] >= 20 - 5, `first delay ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 40 - 5, `second delay ${gaps[1]} ms`);
    assert.ok(gaps[2] >= 80 - 5, `third delay ${gaps[2]} ms`);
    assert.deepEqual(spooledLines(dir), [], 'nothing spooled: it got through');
    assert.equal(logger.at('error').length, 0);
});

test('the backoff is capped at retryMaxMs and honours Retry-After up to it', async t => {
    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    const { shipper } = startShipper(t, mtactl.url, tempDir(t), { retryBaseMs: 100, retryMaxMs: 1000 });
    for (let attempt = 0; attempt < 20; attempt++) {
        const delay = shipper.backoff(attempt, 0);
        assert.ok(delay >= Math.min(1000, 100 * 2 ** attempt) / 2 && delay <= 1000, `attempt ${attempt}: ${delay}`);
    }
    assert.equal(shipper.backoff(0, 700), 700);
    assert.equal(shipper.backoff(0, 5000), 1000);
});

test('413: the batch is split in halves until mtactl takes the parts', async t => {
    const mtactl = await fakeMtactl(request => (JSON.parse(request.body).length > 2 ? { status: 413, body: '{"error": "too_many_records"}' } : accepted()));
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 5 });

    for (let n = 0; n < 5; n++) {
        shipper.push(logEntry(n));
    }
    await shipper.flush();

    assert.deepEqual(
        mtactl.batches().map(batch => batch.length),
        [5, 3, 2, 1, 2]
    );
    const taken = mtactl.batches().filter(batch => batch.length <= 2);
    assert.deepEqual(
        taken.flat().map(entry => entry.id),
        [0, 1, 2, 3, 4].map(n => logEntry(n).id),
        'each entry taken once, in order'
    );
    assert.equal(logger.at('error').length, 0);
    assert.deepEqual(spooledLines(dir), []);
});

test('413 for a single entry is a refusal kept in refused.jsonl', async t => {
    const mtactl = await fakeMtactl(() => ({ status: 413 }));
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 1 });
    shipper.push(logEntry(1));
    await shipper.flush();
    const refused = fs.readFileSync(path.join(dir, 'refused.jsonl'), 'utf8').trim().split('\n').map(line => JSON.parse(line));
    assert.equal(refused.length, 1);
    assert.equal(refused[0].status, 413);
    assert.equal(refused[0].entries[0].id, logEntry(1).id);
    assert.match(logger.at('error')[0].text, /REFUSED a batch of 1 entries/);
});

test('a 4xx refusal is logged loudly, kept byte for byte in refused.jsonl and not sent again', async t => {
    const mtactl = await fakeMtactl(() => ({ status: 403, body: '{"error": "forbidden", "detail": "key lacks events:ingest"}' }));
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 3 });

    for (let n = 0; n < 3; n++) {
        shipper.push(logEntry(n));
    }
    await shipper.flush();

    assert.equal(mtactl.requests.length, 1, 'a refusal is not retried');
    const errors = logger.at('error');
    assert.equal(errors.length, 1);
    assert.match(errors[0].text, /REFUSED a batch of 3 entries \(HTTP 403: .*key lacks events:ingest/);
    assert.match(errors[0].text, /refused\.jsonl/);

    const lines = fs.readFileSync(path.join(dir, 'refused.jsonl'), 'utf8').split('\n').filter(Boolean);
    assert.equal(lines.length, 1, 'one line per refused batch');
    const record = JSON.parse(lines[0]);
    assert.equal(record.status, 403);
    assert.equal(record.node, 'zmta-test-1');
    assert.match(record.reason, /^HTTP 403/);
    assert.ok(Number.isInteger(record.refusedAt));
    // the entries as sent: re-posting them later (jq -c .entries) dedupes against anything taken meanwhile
    assert.ok(lines[0].endsWith(`"entries":${mtactl.requests[0].body}}`));
    assert.deepEqual(spooledLines(dir), [], 'a refused batch is not in the spool');
});

test('408 and 5xx are transient; any other answer but 202 (4xx, a redirect, a 200) is a refusal', async t => {
    for (const [status, transient] of [
        [408, true],
        [500, true],
        [502, true],
        [400, false],
        [401, false],
        [404, false],
        [301, false],
        [200, false]
    ]) {
        const mtactl = await fakeMtactl((request, index) => (index === 0 ? { status, headers: status === 301 ? { Location: 'https://elsewhere.example/' } : {} } : accepted()));
        const dir = tempDir(t);
        const { shipper } = startShipper(t, mtactl.url, dir);
        shipper.push(logEntry(1));
        await shipper.flush();
        await mtactl.close();
        assert.equal(mtactl.requests.length, transient ? 2 : 1, `HTTP ${status}`);
        assert.equal(fs.existsSync(path.join(dir, 'refused.jsonl')), !transient, `HTTP ${status}`);
    }
});

test('a 202 with rejected entries is success: they are logged as warnings and not sent again', async t => {
    const mtactl = await fakeMtactl(() =>
        accepted(JSON.stringify({ accepted: 1, duplicates: 0, rejected: [{ index: 1, error: 'recipient is not an address' }] }))
    );
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 2 });
    shipper.push(logEntry(1));
    shipper.push(logEntry(2, 'DEFERRED'));
    await shipper.flush();

    assert.equal(mtactl.requests.length, 1);
    const warnings = logger.at('warn');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].text, new RegExp(`rejected entry ${logEntry(2).id}\\.001 DEFERRED \\(recipient is not an address\\)`));
    assert.equal(logger.at('error').length, 0);
    assert.equal(fs.existsSync(path.join(dir, 'refused.jsonl')), false);
    assert.deepEqual(spooledLines(dir), []);
});
