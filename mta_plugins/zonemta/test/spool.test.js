'use strict';

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');

const { stampEntry } = require('../lib/entries');
const { fakeMtactl, accepted, tempDir, startShipper, waitFor, logEntry, spoolFiles, spooledLines } = require('./helpers');

const unavailable = { status: 503, body: '{"error": "database_unavailable"}' };

test('when mtactl stays away the batch is spooled, and replayed later byte for byte', async t => {
    let up = false;
    const mtactl = await fakeMtactl(() => (up ? accepted() : unavailable));
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 3, maxRetries: 1 });

    for (let n = 0; n < 3; n++) {
        shipper.push(logEntry(n));
    }
    await shipper.flush();
    assert.equal(mtactl.requests.length, 2, 'one try and one retry');
    const firstBody = mtactl.requests[0].body;
    assert.equal('[' + spooledLines(dir).join(',') + ']', firstBody, 'the spool holds the entries as sent');
    assert.match(logger.at('warn')[0].text, /unreachable \(HTTP 503.*entries go to the spool/);

    // while mtactl is away, new batches go straight to the spool: no request, no retries
    for (let n = 3; n < 6; n++) {
        shipper.push(logEntry(n));
    }
    await shipper.flush();
    assert.equal(mtactl.requests.length, 2);
    await waitFor(() => spooledLines(dir).length === 6, 'six spooled entries');

    // a replay while mtactl is still away is one probe, and keeps everything
    await shipper.replay();
    assert.equal(mtactl.requests.length, 3, mtactl.requests.map(r => r.body.slice(0, 60)).join('\n'));
    assert.equal(spooledLines(dir).length, 6);

    up = true;
    await shipper.replay();
    const replayed = mtactl.requests.slice(3).map(request => request.body);
    assert.equal(replayed.length, 2);
    assert.equal(replayed[0], firstBody, 'byte-identical: same entries, same _mtactl.at');
    assert.deepEqual(
        JSON.parse(replayed[1]).map(entry => entry.id),
        [3, 4, 5].map(n => logEntry(n).id)
    );
    assert.deepEqual(spoolFiles(dir), [], 'replayed files are removed');
    assert.ok(logger.at('info').some(line => /replayed 6 spooled entries/.test(line.text)));

    // and live sending resumes
    shipper.push(logEntry(9));
    await shipper.flush();
    assert.equal(mtactl.requests.length, 6);
});

test('connection refused: spooled, then replayed on the interval once mtactl listens again', async t => {
    const mtactl = await fakeMtactl();
    await mtactl.close(); // the port is known and nothing listens on it
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper } = startShipper(t, mtactl.url, dir, { batchSize: 2, maxRetries: 2, replayIntervalMs: 100 });

    shipper.push(logEntry(1));
    shipper.push(logEntry(2));
    await shipper.flush();
    const spooled = spooledLines(dir);
    assert.equal(spooled.length, 2);

    await mtactl.reopen();
    await waitFor(() => mtactl.requests.length === 1, 'the replay', 5000);
    assert.equal(mtactl.requests[0].body, '[' + spooled.join(',') + ']');
    await waitFor(() => spoolFiles(dir).length === 0, 'the spool to empty');
});

test('memory stays bounded: past maxBufferedEntries the buffer spills to the spool', async t => {
    const mtactl = await fakeMtactl(() => 'hang');
    const dir = tempDir(t);
    const { shipper, logger } = startShipper(t, mtactl.url, dir, { batchSize: 2, maxBufferedEntries: 4, maxRetries: 0 });

    let most = 0;
    for (let n = 0; n < 20; n++) {
        shipper.push(logEntry(n));
        most = Math.max(most, shipper.buffered);
        // give the send loop its turn, as ZoneMTA's own work would
        await new Promise(resolve => setImmediate(resolve));
    }
    assert.ok(most <= 4 + 1, `at most maxBufferedEntries (+ the one that tips it) in memory, saw ${most}`);
    // the live batch mtactl holds, and perhaps the replay of what was spilled (it runs beside live sending)
    assert.ok(mtactl.requests.length <= 2, `${mtactl.requests.length} requests`);
    assert.ok(logger.at('warn').some(line => /spooled \d+ entries .*slower than the log/.test(line.text)));

    await mtactl.close(); // the held request fails; its batch is spooled too
    await shipper.close();
    const ids = spooledLines(dir).map(line => JSON.parse(line).id);
    assert.deepEqual(
        ids.slice().sort(),
        Array.from({ length: 20 }, (_, n) => logEntry(n).id).sort(),
        'every entry is in the spool exactly once'
    );
});

test('a replay that fails halfway keeps exactly the entries mtactl has not taken', async t => {
    const script = []; // answers to come; then 503
    const mtactl = await fakeMtactl(() => script.shift() || unavailable);
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const { shipper } = startShipper(t, mtactl.url, dir, { batchSize: 2, maxRetries: 0 });
    for (let n = 0; n < 5; n++) {
        shipper.push(logEntry(n));
    }
    await shipper.flush();
    const spooled = spooledLines(dir);
    assert.equal(spooled.length, 5);

    script.push(accepted()); // the first replayed batch is taken, the second is not
    await shipper.replay();
    assert.equal(mtactl.requests.length, 3, mtactl.requests.map(r => r.body.slice(0, 60)).join('\n'));
    assert.deepEqual(spooledLines(dir), spooled.slice(2), 'the first batch is gone, the rest kept as written');

    script.push(accepted(), accepted());
    await shipper.replay();
    assert.deepEqual(spooledLines(dir), []);
    const taken = [mtactl.requests[1], mtactl.requests[3], mtactl.requests[4]];
    assert.equal(taken.map(request => request.body.slice(1, -1)).join(','), spooled.join(','));
});

test('files of processes that are gone are adopted and replayed; a live process keeps its own', async t => {
    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    const line = n => stampEntry(logEntry(n), 'zmta-test-1', 1795414203120 + n);
    const write = (name, lines) => fs.writeFileSync(path.join(dir, name), lines.map(l => l + '\n').join(''));

    write(`spool-sender-${deadPid}-0badcafe.live.jsonl`, [line(1), line(2)]);
    write(`spool-sender-${deadPid}-0badcafe.exit.jsonl`, [line(3)]);
    write(`spool-receiver-${deadPid}-0badcafe.claim-7.jsonl`, [line(4)]);
    // pid alive (ours) but its heartbeat stopped long ago: a reused pid
    write(`spool-main-${process.pid}-00000001.live.jsonl`, [line(5)]);
    fs.writeFileSync(path.join(dir, `spool-main-${process.pid}-00000001.alive`), '');
    const longAgo = new Date(Date.now() - 3600 * 1000);
    fs.utimesSync(path.join(dir, `spool-main-${process.pid}-00000001.alive`), longAgo, longAgo);
    // a live process with a fresh heartbeat: not ours to take
    write(`spool-sender-${process.pid}-00000002.live.jsonl`, [line(6)]);
    fs.writeFileSync(path.join(dir, `spool-sender-${process.pid}-00000002.alive`), '');

    const { shipper } = startShipper(t, mtactl.url, dir);
    await shipper.replay(); // start() also runs one: this waits for it
    await shipper.replay();

    const sent = mtactl.requests.flatMap(request => request.body.slice(1, -1).split(/,(?=\{"id")/));
    assert.deepEqual(sent.sort(), [line(1), line(2), line(3), line(4), line(5)].sort(), 'sent as written');
    assert.deepEqual(spoolFiles(dir), [`spool-sender-${process.pid}-00000002.live.jsonl`]);
    assert.equal(fs.existsSync(path.join(dir, `spool-main-${process.pid}-00000001.alive`)), false);
});

test('a line cut short by a crash is kept in refused.jsonl; the others are replayed', async t => {
    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    const dir = tempDir(t);
    const deadPid = spawnSync(process.execPath, ['-e', '']).pid;
    const good = stampEntry(logEntry(1), 'zmta-test-1', 1795414203121);
    const torn = stampEntry(logEntry(2), 'zmta-test-1', 1795414203122).slice(0, 40);
    fs.writeFileSync(path.join(dir, `spool-sender-${deadPid}-0badcafe.live.jsonl`), `${good}\n${torn}`);

    const { shipper, logger } = startShipper(t, mtactl.url, dir);
    await shipper.replay();
    await shipper.replay();

    assert.deepEqual(
        mtactl.requests.map(request => request.body),
        [`[${good}]`]
    );
    const refused = JSON.parse(fs.readFileSync(path.join(dir, 'refused.jsonl'), 'utf8'));
    assert.deepEqual(refused.unreadable, [torn]);
    assert.ok(logger.at('error').some(l => /not JSON/.test(l.text)));
    assert.deepEqual(spoolFiles(dir), []);
});

test('process.exit() keeps what is in memory: the next process replays it', async t => {
    const mtactl = await fakeMtactl(() => 'hang');
    const dir = tempDir(t);
    // a ZoneMTA process that logs five entries while mtactl holds its first request, then exits
    const script = `
        const plugin = require(${JSON.stringify(path.resolve(__dirname, '..'))});
        const logger = { info() {}, warn() {}, error: (...a) => console.error(...a) };
        const hooks = {};
        plugin.init({
            config: { url: ${JSON.stringify(mtactl.url)}, apiKey: 'k', spoolPath: ${JSON.stringify(dir)}, batchSize: 2, node: 'zmta-test-1' },
            logger, addHook: (name, fn) => { hooks[name] = fn; }, manager: { context: 'sender' }
        }, err => { if (err) throw err; });
        for (let n = 0; n < 5; n++) hooks['log:entry']({ id: 'exit' + n, action: 'ACCEPTED' }, () => {});
        setTimeout(() => process.exit(0), 300);
    `;
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
    assert.equal(child.status, 0, child.stderr);
    await mtactl.close();

    const exitFiles = spoolFiles(dir).filter(name => name.endsWith('.exit.jsonl'));
    assert.equal(exitFiles.length, 1, `spool files: ${spoolFiles(dir)}`);
    assert.match(exitFiles[0], /^spool-sender-\d+-[0-9a-f]+\.exit\.jsonl$/);
    const kept = spooledLines(dir).map(line => JSON.parse(line).id);
    assert.deepEqual(kept.slice().sort(), ['exit0', 'exit1', 'exit2', 'exit3', 'exit4'], 'the batch in flight is kept too');
    assert.equal(fs.readdirSync(dir).filter(name => name.endsWith('.alive')).length, 0, 'it gave up its files');

    const next = await fakeMtactl();
    t.after(() => next.close());
    const { shipper } = startShipper(t, next.url, dir);
    await shipper.replay();
    await shipper.replay();
    assert.deepEqual(next.batches().flat().map(entry => entry.id).sort(), ['exit0', 'exit1', 'exit2', 'exit3', 'exit4']);
    assert.deepEqual(spoolFiles(dir), []);
});

test('a spool that cannot be written: entries wait in memory, bounded and loudly, and go when mtactl is back', async t => {
    const script = [];
    const mtactl = await fakeMtactl(() => script.shift() || unavailable);
    t.after(() => mtactl.close());
    const blocker = path.join(tempDir(t), 'a-file');
    fs.writeFileSync(blocker, '');
    const spoolPath = path.join(blocker, 'spool'); // ENOTDIR, even for root
    const { shipper, logger } = startShipper(t, mtactl.url, spoolPath, { batchSize: 2, maxBufferedEntries: 2, maxRetries: 0 });
    assert.match(logger.at('error')[0].text, /cannot use the spool folder/);

    for (let n = 0; n < 12; n++) {
        shipper.push(logEntry(n));
        await shipper.flush();
    }
    assert.ok(logger.at('error').some(line => /cannot write the spool .* entries wait in memory/.test(line.text)));
    // maxUnwritten is 4 x maxBufferedEntries: the 4 oldest of 12 are given up, and said so
    const lost = logger.at('error').filter(line => /^LOST/.test(line.text));
    assert.ok(lost.length >= 1);
    assert.equal(
        lost.reduce((sum, line) => sum + Number(/^LOST (\d+)/.exec(line.text)[1]), 0),
        4
    );

    script.push(...Array.from({ length: 4 }, () => accepted()));
    const before = mtactl.requests.length;
    await shipper.replay();
    const sent = mtactl.requests.slice(before);
    assert.deepEqual(
        sent.flatMap(request => JSON.parse(request.body).map(entry => entry.id)),
        [4, 5, 6, 7, 8, 9, 10, 11].map(n => logEntry(n).id)
    );
    assert.equal(shipper.spool.unwritten.length, 0);
});
