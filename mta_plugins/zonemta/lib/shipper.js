'use strict';

// Takes serialized entries from the hook, sends them to mtactl in batches off the hook's path, and keeps
// whatever mtactl has not acknowledged in the spool until it does.
//
// One send loop per process with at most one request in flight (plus the replay of the spool), so a slow
// mtactl costs the process memory up to maxBufferedEntries and then disk, never time on the hook's path.

const { postBatch } = require('./client');
const { stampEntry, batchBody, describeEntry } = require('./entries');
const { Spool } = require('./spool');

const REJECTED_LOGGED_PER_BATCH = 20;
const SPILL_WARNING_EVERY_MS = 60000;

class Shipper {
    /**
     * @param {object} settings from parseSettings()
     * @param {object} options
     * @param {{error: Function, warn: Function, info: Function}} options.logger ZoneMTA's app.logger (npmlog)
     * @param {string} options.logPrefix
     * @param {string} [options.context]
     * @param {object} [options.spool] extra Spool options (timings), for tests
     */
    constructor(settings, options) {
        this.settings = settings;
        this.logger = options.logger;
        this.logPrefix = options.logPrefix;
        this.spool = new Spool({
            dir: settings.spoolPath,
            context: options.context,
            node: settings.node,
            logger: this.logger,
            logPrefix: this.logPrefix,
            maxUnwritten: settings.maxBufferedEntries * 4,
            ...options.spool
        });

        this.pending = []; // entries not yet cut into a batch
        this.queued = []; // batches waiting for the send loop
        this.inFlight = null;
        this.buffered = 0; // entries in the three above
        // mtactl did not answer: batches go straight to the spool, and mtactl is tried once per replayIntervalMs
        this.down = false;
        this.lastTryWhileDown = 0;
        this.sending = null;
        this.replaying = null;
        this.closed = false;
        this.lastSpillWarning = 0;
        this.spilledSinceWarning = 0;
        this.timers = [];
        this.onExit = () => this.exitNow();
    }

    start() {
        try {
            this.spool.openSync();
        } catch (err) {
            // Still worth running: only an outage of mtactl needs the spool.
            this.logger.error(this.logPrefix, 'cannot use the spool folder %s: %s', this.settings.spoolPath, err.message);
        }
        this.every(this.settings.flushIntervalMs, () => this.flushPending());
        this.every(this.settings.replayIntervalMs, () => this.replay());
        // ZoneMTA's processes end with process.exit(): 'exit' is the last chance to keep what is in memory.
        process.on('exit', this.onExit);
        // files left by earlier processes
        this.later(0, () => this.replay());
    }

    every(ms, task) {
        const timer = setInterval(task, ms);
        timer.unref();
        this.timers.push(timer);
    }

    later(ms, task) {
        const timer = setTimeout(task, ms);
        timer.unref();
        this.timers.push(timer);
    }

    /** The hook's path: serialize, buffer, return. Never waits for anything. */
    push(entry) {
        const line = stampEntry(entry, this.settings.node, Date.now());
        if (this.closed) {
            this.spool.appendSync([line]);
            return;
        }
        this.pending.push(line);
        this.buffered++;
        if (this.pending.length >= this.settings.batchSize) {
            this.cut();
        }
        if (this.buffered > this.settings.maxBufferedEntries) {
            this.spill('mtactl is slower than the log');
        } else if (this.queued.length) {
            this.kick();
        }
    }

    cut() {
        while (this.pending.length) {
            this.queued.push(this.pending.splice(0, this.settings.batchSize));
        }
    }

    flushPending() {
        if (this.pending.length) {
            this.cut();
            this.kick();
        }
    }

    /** Everything in memory but the batch in flight goes to the spool. */
    spill(why) {
        this.cut();
        const lines = [].concat(...this.queued);
        this.queued = [];
        if (!lines.length) {
            return;
        }
        this.buffered -= lines.length;
        this.spool.append(lines);
        this.spilledSinceWarning += lines.length;
        const now = Date.now();
        if (now - this.lastSpillWarning >= SPILL_WARNING_EVERY_MS) {
            this.logger.warn(this.logPrefix, 'spooled %d entries to %s (%s)', this.spilledSinceWarning, this.settings.spoolPath, why);
            this.lastSpillWarning = now;
            this.spilledSinceWarning = 0;
        }
    }

    kick() {
        if (this.sending || this.closed) {
            return;
        }
        this.sending = this.sendLoop().finally(() => {
            this.sending = null;
            if (this.queued.length && !this.closed) {
                this.kick();
            }
        });
    }

    async sendLoop() {
        while (this.queued.length) {
            if (this.down && Date.now() - this.lastTryWhileDown < this.settings.replayIntervalMs) {
                this.spill('mtactl is unreachable');
                return;
            }
            const batch = this.queued.shift();
            this.inFlight = batch;
            let unsent;
            try {
                unsent = await this.deliver(batch, this.retriesNow());
            } finally {
                this.inFlight = null;
                this.buffered -= batch.length;
            }
            if (unsent.length) {
                await this.spool.append(unsent);
            } else if (this.spool.mayHaveWork) {
                this.replay();
            }
        }
    }

    /**
     * Send one batch until mtactl takes it, refuses it for good, or the retries run out.
     * @param {string[]} lines
     * @param {number} retries
     * @returns {Promise<string[]>} the entries still to be sent (to spool): none, all, or a tail after a 413 split
     */
    async deliver(lines, retries) {
        const body = batchBody(lines);
        for (let attempt = 0; ; attempt++) {
            const outcome = await postBatch(this.settings, body);
            switch (outcome.kind) {
                case 'accepted':
                    this.reportRejected(lines, outcome.rejected);
                    this.markUp();
                    return [];
                case 'too_large': {
                    if (lines.length === 1) {
                        await this.refuse(lines, 413, 'HTTP 413: one entry alone is larger than mtactl takes');
                        return [];
                    }
                    const half = Math.ceil(lines.length / 2);
                    const firstUnsent = await this.deliver(lines.slice(0, half), retries);
                    if (firstUnsent.length) {
                        return firstUnsent.concat(lines.slice(half));
                    }
                    return this.deliver(lines.slice(half), retries);
                }
                case 'refused':
                    await this.refuse(lines, outcome.status, outcome.reason);
                    return [];
                default:
                    if (attempt >= retries || this.closed) {
                        this.markDown(outcome.reason);
                        return lines;
                    }
                    await sleep(this.backoff(attempt, outcome.retryAfterMs));
            }
        }
    }

    /** Exponential from retryBaseMs, capped at retryMaxMs, half of it random so that processes spread out. */
    backoff(attempt, retryAfterMs) {
        const { retryBaseMs, retryMaxMs } = this.settings;
        const ceiling = Math.min(retryMaxMs, retryBaseMs * 2 ** attempt);
        const jittered = ceiling / 2 + (Math.random() * ceiling) / 2;
        return Math.min(retryMaxMs, Math.max(jittered, retryAfterMs || 0));
    }

    /** While mtactl is away, one try is the probe; the next batch or replay tries again. */
    retriesNow() {
        if (this.down) {
            this.lastTryWhileDown = Date.now();
            return 0;
        }
        return this.settings.maxRetries;
    }

    markDown(reason) {
        this.lastTryWhileDown = Date.now();
        if (!this.down) {
            this.down = true;
            this.logger.warn(
                this.logPrefix,
                'mtactl at %s is unreachable (%s): entries go to the spool %s, retried every %d ms',
                this.settings.url,
                reason,
                this.settings.spoolPath,
                this.settings.replayIntervalMs
            );
        }
    }

    markUp() {
        if (this.down) {
            this.down = false;
            this.logger.info(this.logPrefix, 'mtactl at %s answers again; replaying the spool', this.settings.url);
        }
    }

    reportRejected(lines, rejected) {
        rejected.slice(0, REJECTED_LOGGED_PER_BATCH).forEach(item => {
            const line = lines[item && item.index];
            this.logger.warn(
                this.logPrefix,
                'mtactl rejected entry %s (%s); it is in mtactl\'s dead letters and is not sent again',
                line === undefined ? `#${item && item.index}` : describeEntry(line),
                item && item.error
            );
        });
        if (rejected.length > REJECTED_LOGGED_PER_BATCH) {
            this.logger.warn(this.logPrefix, 'mtactl rejected %d more entries of the same batch', rejected.length - REJECTED_LOGGED_PER_BATCH);
        }
    }

    async refuse(lines, status, reason) {
        this.logger.error(
            this.logPrefix,
            'mtactl REFUSED a batch of %d entries (%s); not sent again, kept in %s',
            lines.length,
            reason,
            this.spool.refusedPath
        );
        await this.spool.refuse(lines, { status, reason });
    }

    /** Send the spool (this process's, and that of processes that are gone); one run at a time. */
    replay() {
        if (!this.replaying && !this.closed) {
            this.replaying = this.replayFiles()
                .catch(err => this.logger.error(this.logPrefix, 'replaying the spool failed: %s', err.stack || err.message))
                .finally(() => {
                    this.replaying = null;
                });
        }
        return this.replaying || Promise.resolve();
    }

    async replayFiles() {
        const files = await this.spool.claim();
        let replayed = 0;
        let stopped = false;
        for (const file of files) {
            let stop = null;
            for await (const batch of this.spool.batches(file, this.settings.batchSize)) {
                if (batch.unreadable.length) {
                    const reason = 'spool lines that are not JSON (a write cut short by a crash)';
                    this.logger.error(this.logPrefix, 'found %d %s in %s; kept in %s', batch.unreadable.length, reason, file, this.spool.refusedPath);
                    await this.spool.refuse(batch.unreadable, { status: null, reason, unreadable: true });
                }
                if (!batch.lines.length) {
                    continue;
                }
                const unsent = await this.deliver(batch.lines, this.retriesNow());
                replayed += batch.lines.length - unsent.length;
                if (unsent.length) {
                    stop = { unsent, end: batch.end };
                    break;
                }
            }
            if (stop) {
                await this.spool.keep(file, stop.unsent, stop.end);
                stopped = true;
                break;
            }
            await this.spool.remove(file);
        }
        if (!stopped && this.spool.unwritten.length) {
            // entries the disk would not take: send them, as mtactl may be back where the disk is not
            const stranded = this.spool.unwritten.splice(0);
            for (let from = 0; from < stranded.length; from += this.settings.batchSize) {
                const unsent = await this.deliver(stranded.slice(from, from + this.settings.batchSize), this.retriesNow());
                replayed += Math.min(this.settings.batchSize, stranded.length - from) - unsent.length;
                if (unsent.length) {
                    await this.spool.append(unsent.concat(stranded.slice(from + this.settings.batchSize)));
                    break;
                }
            }
        }
        if (replayed) {
            this.logger.info(this.logPrefix, 'replayed %d spooled entries to mtactl', replayed);
        }
        this.kick();
    }

    /** Send what is in memory now and wait for it (and any replay under way); for tests and shutdown. */
    async flush() {
        if (this.closed) {
            return;
        }
        this.cut();
        while (this.queued.length || this.sending || this.replaying) {
            this.kick();
            await Promise.all([this.sending, this.replaying]);
        }
        await this.spool.append([]); // and what was spilled is on disk
    }

    /** Stop; what was not sent stays in the spool for the next process. */
    async close() {
        this.closed = true;
        this.timers.forEach(timer => clearInterval(timer));
        await Promise.all([this.sending, this.replaying]);
        this.cut();
        const lines = [].concat(...this.queued);
        this.queued = [];
        this.buffered = 0;
        // also waits for spills still being written
        await this.spool.append(lines);
        process.removeListener('exit', this.onExit);
        this.spool.release();
    }

    exitNow() {
        this.closed = true;
        // the batch in flight may have been taken already: sending it again is a duplicate mtactl dedupes
        const lines = [].concat(...this.queued, this.pending, this.inFlight || []);
        this.spool.appendSync(lines);
    }
}

function sleep(ms) {
    return new Promise(resolve => setTimeout(resolve, ms).unref());
}

module.exports = { Shipper };
