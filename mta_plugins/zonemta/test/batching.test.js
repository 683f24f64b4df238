'use strict';

const assert = require('node:assert/strict');
const { test } = require('node:test');

const plugin = require('..');
const { fakeMtactl, recordingLogger, tempDir, startShipper, waitFor, logEntry } = require('./helpers');

test('a full batch goes at once; the remainder waits for the flush', async t => {
    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    const { shipper } = startShipper(t, mtactl.url, tempDir(t), { batchSize: 3 });

    for (let n = 0; n < 7; n++) {
        shipper.push(logEntry(n));
    }
    await waitFor(() => mtactl.requests.length === 2, 'two full batches');
    await new Promise(resolve => setTimeout(resolve, 100));
    assert.deepEqual(
        mtactl.batches().map(batch => batch.length),
        [3, 3],
        'the seventh entry waits for flushIntervalMs'
    );

    await shipper.flush();
    assert.deepEqual(
        mtactl.batches().map(batch => batch.length),
        [3, 3, 1]
    );
    const request = mtactl.requests[0];
    assert.equal(request.method, 'POST');
    assert.equal(request.url, '/api/v1/events/ingest/zonemta');
    assert.equal(request.headers['content-type'], 'application/json');
    assert.equal(request.headers.authorization, 'Bearer mq_live_test');

    const sent = mtactl.batches().flat();
    sent.forEach((entry, n) => {
        const { _mtactl, ...original } = entry;
        assert.deepEqual(original, logEntry(n), 'every key ZoneMTA passed is kept');
        assert.equal(_mtactl.node, 'zmta-test-1');
        assert.ok(Number.isInteger(_mtactl.at) && Math.abs(Date.now() - _mtactl.at) < 60000);
        assert.deepEqual(Object.keys(_mtactl), ['node', 'at']);
    });
});

test('a partial batch goes after flushIntervalMs', async t => {
    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    startShipper(t, mtactl.url, tempDir(t), { batchSize: 100, flushIntervalMs: 50 }).shipper.push(logEntry(1));

    assert.equal(mtactl.requests.length, 0);
    const pushedAt = Date.now();
    await waitFor(() => mtactl.requests.length === 1, 'the interval flush', 2000);
    assert.ok(Date.now() - pushedAt < 1000);
    assert.equal(mtactl.batches()[0].length, 1);
});

test('the log:entry hook returns at once, without waiting for mtactl', async t => {
    const mtactl = await fakeMtactl(() => 'hang');
    const logger = recordingLogger();
    const hooks = {};
    const app = {
        config: {
            enabled: ['main', 'receiver', 'sender'],
            url: mtactl.url,
            apiKey: 'mq_live_test',
            spoolPath: tempDir(t),
            batchSize: 1,
            maxRetries: 0,
            timeoutMs: 500
        },
        logger,
        addHook: (name, action) => {
            hooks[name] = action;
        }
    };
    let initError = 'not called';
    plugin.init(app, err => {
        initError = err;
    });
    assert.equal(initError, undefined);
    assert.deepEqual(Object.keys(hooks), ['log:entry']);
    const shipper = plugin.shipper;

    const entry = logEntry(1);
    const before = structuredClone(entry);
    let nextCalled = false;
    const started = process.hrtime.bigint();
    const returned = hooks['log:entry'](entry, () => {
        nextCalled = true;
    });
    const tookMs = Number(process.hrtime.bigint() - started) / 1e6;
    assert.equal(returned, undefined, 'no promise: nothing to wait for');
    assert.ok(nextCalled, 'next() is called before the hook returns');
    assert.ok(tookMs < 50, `the hook took ${tookMs} ms`);
    assert.deepEqual(entry, before, 'the entry other hooks see is not changed');

    // mtactl now holds a request without answering: the hook still returns at once, every time
    await waitFor(() => mtactl.requests.length === 1, 'the request mtactl holds');
    for (let n = 2; n < 50; n++) {
        let called = false;
        const t0 = process.hrtime.bigint();
        hooks['log:entry'](logEntry(n), () => {
            called = true;
        });
        assert.ok(called && Number(process.hrtime.bigint() - t0) / 1e6 < 50);
    }
    assert.equal(mtactl.requests.length, 1, 'one request in flight at a time');

    await mtactl.close();
    await shipper.close();
});

test('bad settings fail the plugin with a message ZoneMTA logs', () => {
    const cases = [
        [{ apiKey: 'k' }, /url/],
        [{ url: 'ftp://x', apiKey: 'k' }, /http or https/],
        [{ url: 'http://x' }, /apiKey/],
        [{ url: 'http://x', apiKey: 'k', batchSize: 20000 }, /batchSize/],
        [{ url: 'http://x', apiKey: 'k', batchSize: 500, maxBufferedEntries: 100 }, /maxBufferedEntries/]
    ];
    for (const [config, message] of cases) {
        let error;
        plugin.init({ config, logger: recordingLogger(), addHook: () => assert.fail('no hook on bad settings') }, err => {
            error = err;
        });
        assert.match(error && error.message, message);
    }
});

test('an entry JSON cannot hold as it is (a BigInt, a cycle) is still shipped, those values spelled out', () => {
    const { stampEntry } = require('../lib/entries');
    const entry = { id: 'x1', action: 'QUEUE_POLL', query: { n: 10n, nested: { list: [1, 2] } }, when: new Date(0), none: undefined };
    entry.query.self = entry.query;
    const shared = { a: 1 };
    entry.left = shared;
    entry.right = shared; // repeated, not a cycle: kept twice
    assert.deepEqual(JSON.parse(stampEntry(entry, 'n1', 5)), {
        id: 'x1',
        action: 'QUEUE_POLL',
        query: { n: '10', nested: { list: [1, 2] }, self: '[Circular]' },
        when: '1970-01-01T00:00:00.000Z',
        left: { a: 1 },
        right: { a: 1 },
        _mtactl: { node: 'n1', at: 5 }
    });
});
