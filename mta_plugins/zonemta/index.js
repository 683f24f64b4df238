'use strict';

// zonemta-mtactl: a ZoneMTA plugin that ships every log entry (the `log:entry` hook) to mtactl's
// POST /api/v1/events/ingest/zonemta. See "ZoneMTA plugin" in mtactl's README for the config lines.
//
// ZoneMTA loads a plugin once per process for each context listed in its `enabled` setting, and each
// process only sees the log entries it emits itself (QUEUED in receivers and the API in main; ACCEPTED,
// DEFERRED, REJECTED in senders; DROP, DELETED, QUEUE_BOUNCE in main), so enable it in all three.

const { parseSettings } = require('./lib/settings');
const { Shipper } = require('./lib/shipper');

module.exports.title = 'mtactl log shipper';

module.exports.init = function (app, done) {
    // The handler's context is not part of the documented plugin API; it only names the spool files.
    const context = (app.manager && app.manager.context) || 'zonemta';
    const logPrefix = `MTACTL/${context}/${process.pid}`;

    let parsed;
    try {
        parsed = parseSettings(app.config);
    } catch (err) {
        return done(err); // ZoneMTA logs "Failed loading plugin" with this message
    }
    const { settings, unknownKeys } = parsed;
    if (unknownKeys.length) {
        app.logger.warn(logPrefix, 'ignoring unknown settings: %s', unknownKeys.join(', '));
    }

    const shipper = new Shipper(settings, { logger: app.logger, logPrefix, context });
    shipper.start();

    // ZoneMTA waits for each log:entry hook before running the next one; this one only buffers the entry.
    app.addHook('log:entry', (entry, next) => {
        try {
            shipper.push(entry);
        } catch (err) {
            app.logger.error(logPrefix, 'could not take log entry %s %s: %s', entry && entry.id, entry && entry.action, err.message);
        }
        if (typeof next === 'function') {
            next();
        }
    });

    module.exports.shipper = shipper; // for tests and for anyone who wants to flush() before a planned stop
    app.logger.info(logPrefix, 'shipping log entries of node %s to %s in batches of %d', settings.node, settings.endpoint, settings.batchSize);
    return done();
};
