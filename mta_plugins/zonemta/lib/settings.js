'use strict';

// The plugin's settings: ZoneMTA hands the plugin's config table over as app.config
// (including its own `enabled` key); this turns it into checked values with defaults.

const fs = require('fs');
const os = require('os');
const path = require('path');

const INGEST_ROUTE = '/api/v1/events/ingest/zonemta';

// mtactl answers 413 above MTACTL_INGEST_MAX_RECORDS_PER_REQUEST (10,000 by default).
const MAX_BATCH_SIZE = 10000;

const DEFAULTS = {
    batchSize: 200,
    flushIntervalMs: 1000,
    timeoutMs: 10000,
    maxRetries: 5,
    retryBaseMs: 500,
    retryMaxMs: 30000,
    replayIntervalMs: 10000,
    maxBufferedEntries: 10000
};

// Keys ZoneMTA itself reads from a plugin's table, or that we accept; anything else is a typo worth a warning.
const KNOWN_KEYS = new Set([
    'enabled',
    'ordering',
    'url',
    'apiKey',
    'apiKeyFile',
    'spoolPath',
    'node',
    ...Object.keys(DEFAULTS)
]);

class SettingsError extends Error {
    constructor(message) {
        super(`zonemta-mtactl: ${message}`);
        this.name = 'SettingsError';
    }
}

function positiveInteger(config, key, { min = 1, max = Number.MAX_SAFE_INTEGER } = {}) {
    const value = config[key] === undefined ? DEFAULTS[key] : config[key];
    if (!Number.isInteger(value) || value < min || value > max) {
        throw new SettingsError(`${key} must be an integer from ${min} to ${max}, got ${JSON.stringify(config[key])}`);
    }
    return value;
}

function readApiKey(config) {
    if (config.apiKey !== undefined && config.apiKeyFile !== undefined) {
        throw new SettingsError('set apiKey or apiKeyFile, not both');
    }
    let key = config.apiKey;
    if (config.apiKeyFile !== undefined) {
        try {
            key = fs.readFileSync(String(config.apiKeyFile), 'utf8').trim();
        } catch (err) {
            throw new SettingsError(`apiKeyFile ${config.apiKeyFile} cannot be read: ${err.message}`);
        }
    }
    if (typeof key !== 'string' || !key || /[\r\n]/.test(key)) {
        throw new SettingsError('apiKey (or apiKeyFile) must give an mtactl key with the events:ingest scope');
    }
    return key;
}

function readUrl(config) {
    let parsed;
    try {
        parsed = new URL(String(config.url || ''));
    } catch {
        throw new SettingsError(`url must be mtactl's base URL (e.g. http://mtactl.internal:8080), got ${JSON.stringify(config.url)}`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
        throw new SettingsError(`url must be http or https, got ${parsed.protocol}`);
    }
    return String(config.url).replace(/\/+$/, '');
}

/**
 * @param {object|true} config the plugin's table from ZoneMTA's config
 * @param {{cwd?: string}} [where]
 * @returns {{settings: object, unknownKeys: string[]}}
 */
function parseSettings(config, where = {}) {
    if (!config || typeof config !== 'object') {
        throw new SettingsError('needs a config table with at least url and apiKey');
    }
    const batchSize = positiveInteger(config, 'batchSize', { max: MAX_BATCH_SIZE });
    const settings = {
        url: readUrl(config),
        apiKey: readApiKey(config),
        batchSize,
        flushIntervalMs: positiveInteger(config, 'flushIntervalMs'),
        timeoutMs: positiveInteger(config, 'timeoutMs'),
        maxRetries: positiveInteger(config, 'maxRetries', { min: 0, max: 100 }),
        retryBaseMs: positiveInteger(config, 'retryBaseMs'),
        retryMaxMs: positiveInteger(config, 'retryMaxMs'),
        replayIntervalMs: positiveInteger(config, 'replayIntervalMs'),
        // at least one full batch, or a full batch could never be formed in memory
        maxBufferedEntries: positiveInteger(config, 'maxBufferedEntries', { min: batchSize }),
        spoolPath: path.resolve(where.cwd || process.cwd(), String(config.spoolPath || 'mtactl-spool')),
        node: config.node === undefined ? os.hostname() : String(config.node)
    };
    if (!settings.node) {
        throw new SettingsError('node must be the node name registered in mtactl');
    }
    settings.endpoint = settings.url + INGEST_ROUTE;
    const unknownKeys = Object.keys(config).filter(key => !KNOWN_KEYS.has(key));
    return { settings, unknownKeys };
}

module.exports = { parseSettings, SettingsError, DEFAULTS, INGEST_ROUTE, MAX_BATCH_SIZE };
