'use strict';

// The local spool: entries mtactl has not acknowledged yet, on disk, one serialized entry per line (JSONL).
//
// ZoneMTA runs the plugin in many processes at once (main, every receiver, every sender), so each process
// appends only to files of its own, named spool-<context>-<pid>-<instance>.<kind>.jsonl:
//   .live.jsonl     what this process spills while mtactl is away (appended, fsynced)
//   .claim-N.jsonl  a file taken for replay: the live file renamed, or another process's file adopted
//   .exit.jsonl     what was still in memory when the process exited
// plus spool-<context>-<pid>-<instance>.alive, touched every few seconds while the process lives.
// A process whose pid is gone, or whose .alive file is missing or stale (pids are reused, e.g. in
// containers), has its files adopted by the next process that replays; rename() makes sure only one does.
// refused.jsonl (shared, append-only) keeps what mtactl refused for good, for an operator to look at.

const crypto = require('crypto');
const fs = require('fs');
const fsp = fs.promises;
const path = require('path');

const SPOOL_FILE = /^(spool-[a-z0-9]+-(\d+)-[0-9a-f]+)\.(live|exit|claim-(\d+))\.jsonl$/;
const REFUSED_FILE = 'refused.jsonl';
const READ_CHUNK = 1 << 16;

class Spool {
    /**
     * @param {object} options
     * @param {string} options.dir
     * @param {string} options.context ZoneMTA's process context (main, receiver, sender)
     * @param {string} options.node
     * @param {{error: Function, warn: Function, info: Function}} options.logger
     * @param {string} options.logPrefix
     * @param {number} options.maxUnwritten lines kept in memory while the spool cannot be written
     * @param {number} [options.heartbeatMs]
     * @param {number} [options.staleMs] an .alive file older than this means its process is gone
     * @param {number} [options.adoptGraceMs] wait after adopting, so a write already under way lands first
     */
    constructor(options) {
        this.dir = options.dir;
        this.node = options.node;
        this.logger = options.logger;
        this.logPrefix = options.logPrefix;
        this.maxUnwritten = options.maxUnwritten;
        this.heartbeatMs = options.heartbeatMs || 5000;
        this.staleMs = options.staleMs || 60000;
        this.adoptGraceMs = options.adoptGraceMs === undefined ? 1000 : options.adoptGraceMs;

        const context = String(options.context || 'zonemta')
            .toLowerCase()
            .replace(/[^a-z0-9]/g, '') || 'zonemta';
        this.prefix = `spool-${context}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
        this.livePath = path.join(this.dir, `${this.prefix}.live.jsonl`);
        this.exitPath = path.join(this.dir, `${this.prefix}.exit.jsonl`);
        this.alivePath = path.join(this.dir, `${this.prefix}.alive`);
        this.refusedPath = path.join(this.dir, REFUSED_FILE);

        this.claimSeq = 0;
        this.unwritten = [];
        this.writing = []; // lines of the append under way
        // appends and the claim of the live file run one after the other, never interleaved
        this.chain = Promise.resolve();
        this.mayHaveWork = true; // files of earlier processes may be waiting
        this.heartbeat = null;
        this.released = false;
        this.touchFailed = false;
    }

    /**
     * Create the folder and this process's .alive file; synchronous so that it precedes any append. Throws if the
     * folder cannot be made; the heartbeat keeps trying all the same, so a folder mounted late is picked up.
     */
    openSync() {
        this.heartbeat = setInterval(() => this.touch(), this.heartbeatMs);
        this.heartbeat.unref();
        fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
        fs.writeFileSync(this.alivePath, '');
    }

    touch() {
        const now = new Date();
        fsp.utimes(this.alivePath, now, now)
            // missing (never made, or removed by hand): make it again, unless this process has given up its files
            .catch(() => this.released || this.ensureAlive())
            .then(
                () => {
                    this.touchFailed = false;
                },
                err => {
                    if (!this.touchFailed) {
                        this.touchFailed = true;
                        this.logger.error(this.logPrefix, 'cannot keep %s: %s', this.alivePath, err.message);
                    }
                }
            );
        if (this.unwritten.length) {
            this.append([]);
        }
    }

    async ensureAlive() {
        await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
        await fsp.writeFile(this.alivePath, '');
    }

    /**
     * Append lines to this process's live file. Never rejects: when the disk refuses, the lines wait in memory
     * (up to maxUnwritten) and are written with the next append or heartbeat.
     * @param {string[]} lines
     * @returns {Promise<boolean>} whether everything handed over so far is on disk
     */
    append(lines) {
        this.unwritten.push(...lines);
        const run = this.chain.then(async () => {
            if (!this.unwritten.length) {
                return true;
            }
            const taken = this.unwritten;
            this.unwritten = [];
            this.writing = taken;
            try {
                await appendDurably(this.livePath, taken.join('\n') + '\n');
                this.mayHaveWork = true;
                return true;
            } catch (err) {
                this.unwritten = taken.concat(this.unwritten);
                this.logger.error(
                    this.logPrefix,
                    'cannot write the spool %s (%s): %d entries wait in memory',
                    this.livePath,
                    err.message,
                    this.unwritten.length
                );
                this.shedUnwritten();
                return false;
            } finally {
                this.writing = [];
            }
        });
        this.chain = run.catch(() => false);
        return run;
    }

    // Neither mtactl nor the disk takes entries: past the cap the oldest go, loudly, so memory stays bounded.
    shedUnwritten() {
        const excess = this.unwritten.length - this.maxUnwritten;
        if (excess > 0) {
            const lost = this.unwritten.splice(0, excess);
            this.logger.error(
                this.logPrefix,
                'LOST %d log entries: mtactl is unreachable and the spool %s cannot be written; first lost: %s',
                lost.length,
                this.dir,
                lost[0]
            );
        }
    }

    /** At process exit only: write what is still in memory, synchronously, and give up this process's files. */
    appendSync(lines) {
        // an append under way may never finish now; written twice, mtactl takes it once
        const all = this.writing.concat(this.unwritten, lines);
        this.unwritten = [];
        this.writing = [];
        try {
            if (all.length) {
                const fd = fs.openSync(this.exitPath, 'a', 0o600);
                try {
                    fs.writeSync(fd, all.join('\n') + '\n');
                    fs.fsyncSync(fd);
                } finally {
                    fs.closeSync(fd);
                }
            }
        } catch (err) {
            this.logger.error(this.logPrefix, 'LOST %d log entries at exit: %s', all.length, err.message);
        }
        this.release();
    }

    /** Stop the heartbeat and drop the .alive file, so that the next process adopts what is left at once. */
    release() {
        this.released = true;
        clearInterval(this.heartbeat);
        try {
            fs.unlinkSync(this.alivePath);
        } catch {
            // already gone
        }
    }

    /**
     * Keep a batch mtactl refused for good in refused.jsonl, as one line:
     * {"refusedAt", "node", "status", "reason", "entries": [the entries, byte for byte]} — or "unreadable": [raw
     * lines] for spool lines that are not JSON (a write cut short by a crash).
     */
    async refuse(lines, { status, reason, unreadable = false }) {
        const head = JSON.stringify({ refusedAt: Date.now(), node: this.node, status, reason });
        const list = unreadable ? JSON.stringify(lines) : '[' + lines.join(',') + ']';
        const record = `${head.slice(0, -1)},"${unreadable ? 'unreadable' : 'entries'}":${list}}\n`;
        try {
            await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
            // one write per record with O_APPEND, so records of different processes do not interleave
            await appendDurably(this.refusedPath, record);
        } catch (err) {
            this.logger.error(this.logPrefix, 'cannot write %s (%s); the refused record follows: %s', this.refusedPath, err.message, record);
        }
    }

    /**
     * Take every file there is to replay: this process's live file, its earlier claims, and the files of
     * processes that are gone.
     * @returns {Promise<string[]>} this process's claim files, oldest first
     */
    async claim() {
        await this.enqueue(async () => {
            const size = await fsp.stat(this.livePath).then(s => s.size, () => 0);
            if (size > 0) {
                await fsp.rename(this.livePath, this.claimPath());
            }
        });
        let names = await fsp.readdir(this.dir).catch(() => []);
        if (await this.adoptOrphans(names)) {
            await sleep(this.adoptGraceMs);
            names = await fsp.readdir(this.dir).catch(() => []);
        }
        const claims = [];
        for (const name of names) {
            const match = SPOOL_FILE.exec(name);
            if (match && match[1] === this.prefix && match[4] !== undefined) {
                claims.push({ file: path.join(this.dir, name), seq: Number(match[4]) });
            }
        }
        this.mayHaveWork = claims.length > 0 || this.unwritten.length > 0;
        return claims.sort((a, b) => a.seq - b.seq).map(claim => claim.file);
    }

    async adoptOrphans(names) {
        const owners = new Map();
        for (const name of names) {
            const match = SPOOL_FILE.exec(name);
            if (match && match[1] !== this.prefix) {
                const files = owners.get(match[1]) || [];
                files.push(name);
                owners.set(match[1], files);
            }
        }
        let adopted = 0;
        for (const [prefix, files] of owners) {
            if (await this.ownerAlive(prefix)) {
                continue;
            }
            for (const name of files) {
                try {
                    await fsp.rename(path.join(this.dir, name), this.claimPath());
                    adopted++;
                } catch (err) {
                    if (err.code !== 'ENOENT') {
                        this.logger.error(this.logPrefix, 'cannot adopt spool file %s: %s', name, err.message);
                    }
                    // ENOENT: another process adopted it first
                }
            }
            await fsp.unlink(path.join(this.dir, `${prefix}.alive`)).catch(() => {});
        }
        if (adopted) {
            this.logger.info(this.logPrefix, 'adopted %d spool files of processes that are gone', adopted);
        }
        return adopted > 0;
    }

    async ownerAlive(prefix) {
        const pid = Number(SPOOL_FILE.exec(`${prefix}.live.jsonl`)[2]);
        const alive = await fsp.stat(path.join(this.dir, `${prefix}.alive`)).catch(() => null);
        if (!alive || Date.now() - alive.mtimeMs > this.staleMs) {
            return false;
        }
        try {
            process.kill(pid, 0);
            return true;
        } catch (err) {
            return err.code === 'EPERM'; // alive, under another user
        }
    }

    claimPath() {
        return path.join(this.dir, `${this.prefix}.claim-${++this.claimSeq}.jsonl`);
    }

    enqueue(task) {
        const run = this.chain.then(task);
        this.chain = run.catch(() => false);
        return run;
    }

    /**
     * A claim file in batches of at most `size` entries, read in chunks so that a large file costs little memory.
     * `end` is the byte offset just after the batch: what follows it is not yet sent.
     * @returns {AsyncGenerator<{lines: string[], unreadable: string[], end: number}>}
     */
    async *batches(file, size) {
        const handle = await fsp.open(file, 'r');
        try {
            const chunk = Buffer.alloc(READ_CHUNK);
            let carry = Buffer.alloc(0);
            let carryAt = 0; // file offset of carry[0]
            let position = 0;
            let batch = { lines: [], unreadable: [], end: 0 };
            const take = (text, end) => {
                if (text.trim()) {
                    (isJsonObject(text) ? batch.lines : batch.unreadable).push(text);
                }
                batch.end = end;
            };
            for (;;) {
                const { bytesRead } = await handle.read(chunk, 0, chunk.length, position);
                if (!bytesRead) {
                    break;
                }
                position += bytesRead;
                const data = Buffer.concat([carry, chunk.subarray(0, bytesRead)]);
                let from = 0;
                let newline;
                while ((newline = data.indexOf(10, from)) !== -1) {
                    take(data.toString('utf8', from, newline), carryAt + newline + 1);
                    from = newline + 1;
                    if (batch.lines.length + batch.unreadable.length >= size) {
                        yield batch;
                        batch = { lines: [], unreadable: [], end: batch.end };
                    }
                }
                carry = Buffer.from(data.subarray(from));
                carryAt += from;
            }
            if (carry.length) {
                // no newline at the end: a write cut short
                take(carry.toString('utf8'), carryAt + carry.length);
            }
            if (batch.lines.length || batch.unreadable.length) {
                yield batch;
            }
        } finally {
            await handle.close();
        }
    }

    /** Replace a claim file with `unsent` followed by everything after byte `offset`: the rest stays spooled. */
    async keep(file, unsent, offset) {
        const temporary = `${file}.tmp`;
        const out = await fsp.open(temporary, 'w', 0o600);
        try {
            if (unsent.length) {
                await out.write(unsent.join('\n') + '\n');
            }
            const input = await fsp.open(file, 'r');
            try {
                const chunk = Buffer.alloc(READ_CHUNK);
                for (let position = offset; ; ) {
                    const { bytesRead } = await input.read(chunk, 0, chunk.length, position);
                    if (!bytesRead) {
                        break;
                    }
                    await out.write(chunk.subarray(0, bytesRead));
                    position += bytesRead;
                }
            } finally {
                await input.close();
            }
            await out.sync();
        } finally {
            await out.close();
        }
        await fsp.rename(temporary, file);
    }

    async remove(file) {
        await fsp.unlink(file);
    }
}

async function appendDurably(file, text) {
    const handle = await fsp.open(file, 'a', 0o600);
    try {
        await handle.writeFile(text);
        await handle.sync();
    } finally {
        await handle.close();
    }
}

function isJsonObject(text) {
    try {
        const value = JSON.parse(text);
        return value !== null && typeof value === 'object' && !Array.isArray(value);
    } catch {
        return false;
    }
}

function sleep(ms) {
    return new Promise(resolve => setTimeout(resolve, ms));
}

module.exports = { Spool, SPOOL_FILE, REFUSED_FILE };
