'use strict';

// The plugin inside ZoneMTA's own machinery: the current @zone-eu/zone-mta from the npm registry, its config
// loader reading the TOML lines the README gives, its lib/plugins.js building the plugin handler
// (@zone-eu/wild-plugins) per process context, and its remotelog() firing log:entry as lib/sender.js does.
// A running ZoneMTA needs MongoDB and Redis; the plugin handler needs neither.
//
// The npm install is the only contact beyond 127.0.0.1. Without npm or the registry the test is skipped,
// unless MTACTL_REQUIRE_NODE is set (CI), where that is a failure.

const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');

const { fakeMtactl, waitFor } = require('./helpers');

const PLUGIN_DIR = path.resolve(__dirname, '..');
const REQUIRED = !['', '0', 'false'].includes(process.env.MTACTL_REQUIRE_NODE || '');
const NETWORK_ERROR = /\b(ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|ERR_SOCKET_TIMEOUT)\b|npm (error|ERR!) network/;

function unavailable(t, why) {
    if (REQUIRED) {
        assert.fail(`${why}, and MTACTL_REQUIRE_NODE is set`);
    }
    t.skip(why);
}

/** A ZoneMTA application folder as zone-mta-template lays it out: @zone-eu/zone-mta and plugins in node_modules. */
function installZoneMta(t) {
    const appDir = fs.mkdtempSync(path.join(os.tmpdir(), 'zonemta-app-'));
    t.after(() => fs.rmSync(appDir, { recursive: true, force: true }));
    // "@latest": without it npm picks the newest release whose `engines` this Node satisfies, not the current one
    const install = spawnSync('npm', ['install', '--no-audit', '--no-fund', '--ignore-scripts', '@zone-eu/zone-mta@latest'], {
        cwd: appDir,
        encoding: 'utf8',
        timeout: 300000,
        env: { ...process.env, npm_config_update_notifier: 'false' }
    });
    if (install.error && install.error.code === 'ENOENT') {
        return unavailable(t, 'npm is not installed (apt-get install npm)');
    }
    if (install.status !== 0) {
        const output = `${install.stderr || ''}${install.stdout || ''}${install.error ? install.error.message : ''}`;
        if (NETWORK_ERROR.test(output)) {
            return unavailable(t, `the npm registry is unreachable: ${output.split('\n').find(line => NETWORK_ERROR.test(line))}`);
        }
        assert.fail(`npm install @zone-eu/zone-mta failed:\n${output}`);
    }
    // what `npm install /path/to/mta_plugins/zonemta` in the application folder does: a link in node_modules
    fs.symlinkSync(PLUGIN_DIR, path.join(appDir, 'node_modules', 'zonemta-mtactl'), 'dir');
    return appDir;
}

test('ZoneMTA (current npm release) loads the plugin in every process and its log:entry reaches mtactl', { timeout: 360000 }, async t => {
    const appDir = installZoneMta(t);
    if (!appDir) {
        return;
    }
    const zoneMta = path.join(appDir, 'node_modules', '@zone-eu', 'zone-mta');
    const version = JSON.parse(fs.readFileSync(path.join(zoneMta, 'package.json'), 'utf8')).version;
    t.diagnostic(`@zone-eu/zone-mta ${version}`);

    const mtactl = await fakeMtactl();
    t.after(() => mtactl.close());
    const spoolPath = path.join(appDir, 'mtactl-spool');

    // The lines the README tells operators to add, with this test's values.
    fs.mkdirSync(path.join(appDir, 'config'));
    const configFile = path.join(appDir, 'config', 'zonemta.toml');
    fs.writeFileSync(
        configFile,
        [
            'corePluginsPath = "./node_modules/@zone-eu/zone-mta/plugins"',
            '',
            '[plugins."modules/zonemta-mtactl"]',
            'enabled = ["main", "receiver", "sender"]',
            `url = "${mtactl.url}"`,
            'apiKey = "mq_live_zonemta_test"',
            'node = "zmta-it-1"',
            'batchSize = 2',
            'flushIntervalMs = 100',
            `spoolPath = "${spoolPath}"`,
            ''
        ].join('\n')
    );

    // As ZoneMTA's app.js starts: its own config folder for defaults, the operator's file via --config
    // (NODE_CONFIG_PATH is the same to wild-config), relative plugin paths resolved from the app folder.
    process.env.NODE_CONFIG_DIR = path.join(zoneMta, 'config');
    process.env.NODE_CONFIG_PATH = configFile;
    process.chdir(appDir);
    require(path.join(appDir, 'node_modules', 'npmlog')).level = 'warn';
    const plugins = require(path.join(zoneMta, 'lib', 'plugins.js'));

    // each ZoneMTA process builds its handler for its own context; every one of them must pick the plugin up
    for (const context of ['main', 'receiver', 'sender']) {
        plugins.init(context);
        const entry = plugins.handler.plugins.find(plugin => plugin.key === 'modules/zonemta-mtactl');
        assert.ok(entry, `the ${context} process loads the plugin`);
        assert.equal(entry.path, 'zonemta-mtactl', '"modules/" means a package in the app folder\'s node_modules');
        assert.equal(entry.config.url, mtactl.url);
    }

    // a sender process: the handler loads the plugin (require + init)
    plugins.init('sender');
    await new Promise(resolve => plugins.handler.load(resolve));
    const loaded = plugins.handler.loaded.find(plugin => plugin.key === 'modules/zonemta-mtactl');
    assert.ok(loaded, 'the plugin initialised');
    assert.equal(loaded.title, 'mtactl log shipper');
    assert.equal(fs.realpathSync(loaded.path), PLUGIN_DIR);
    const shipper = require(PLUGIN_DIR).shipper;
    t.after(() => shipper.close());

    // what lib/sender.js does after a delivery: remotelog() builds the entry and runs the log:entry hooks
    const accepted = {
        zone: 'default',
        from: 'news@sender.example',
        returnPath: 'news@sender.example',
        to: 'dave@example.com',
        mx: 'mx1.example.com',
        host: '203.0.113.25',
        ip: '192.0.2.10',
        response: '250 2.0.0 Ok: queued as 4XyZ1k2L3m',
        size: 5790,
        timer: 412,
        start: 1795414203120,
        messageId: '<c1f0a2e4@sender.example>',
        protocol: 'smtp',
        httpUrl: undefined // ZoneMTA passes undefined for non-HTTP deliveries; JSON has no such value
    };
    const firedAt = Date.now();
    plugins.handler.remotelog('18b0879811a00009a2', '002', 'ACCEPTED', accepted);
    // and the hook run the way remotelog runs it, awaited: it settles without waiting for mtactl
    const started = Date.now();
    await plugins.handler.runHooks('log:entry', [{ id: '18b0879811a00009b7', seq: '003', action: 'REJECTED', category: 'recipient' }]);
    assert.ok(Date.now() - started < 100, 'the hook does not wait for the network');

    await waitFor(() => mtactl.requests.length >= 1, 'the batch at mtactl', 10000);
    const request = mtactl.requests[0];
    assert.equal(request.url, '/api/v1/events/ingest/zonemta');
    assert.equal(request.headers.authorization, 'Bearer mq_live_zonemta_test');
    assert.equal(request.headers['content-type'], 'application/json');
    const batch = JSON.parse(request.body);
    assert.equal(batch.length, 2);
    const { httpUrl, ...expected } = accepted; // eslint-disable-line no-unused-vars
    const { _mtactl: stampAccepted, ...first } = batch[0];
    assert.deepEqual(first, { id: '18b0879811a00009a2', seq: '002', action: 'ACCEPTED', ...expected });
    assert.equal(stampAccepted.node, 'zmta-it-1');
    assert.ok(stampAccepted.at >= firedAt && stampAccepted.at <= Date.now());
    assert.deepEqual(batch[1], {
        id: '18b0879811a00009b7',
        seq: '003',
        action: 'REJECTED',
        category: 'recipient',
        _mtactl: { node: 'zmta-it-1', at: batch[1]._mtactl.at }
    });
    assert.ok(fs.existsSync(spoolPath), 'the spool folder is made at start');
});
