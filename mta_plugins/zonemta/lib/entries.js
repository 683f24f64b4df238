'use strict';

// One log entry as it travels: serialized once, when the hook fires, and never again, so that every
// later send of it (a retry, a replay from the spool) carries the same bytes and mtactl can dedupe it.

/**
 * The entry ZoneMTA passed plus `_mtactl: {node, at}`, as one line of JSON.
 * The entry itself is not modified: other log:entry hooks in the process see it as it was.
 * @param {object} entry
 * @param {string} node
 * @param {number} at ms since epoch when the hook fired
 * @returns {string}
 */
function stampEntry(entry, node, at) {
    const stamped = Object.assign({}, entry, { _mtactl: { node, at } });
    try {
        return JSON.stringify(stamped);
    } catch {
        // A BigInt or a cycle in some plugin's remotelog data: keep the entry with those values spelled out.
        return JSON.stringify(stamped, tolerantReplacer());
    }
}

function tolerantReplacer() {
    const ancestors = [];
    return function (key, value) {
        if (typeof value === 'bigint') {
            return value.toString();
        }
        if (typeof value !== 'object' || value === null) {
            return value;
        }
        // `this` is the object holding `key`: drop ancestors we have left, then look for a cycle.
        while (ancestors.length && ancestors[ancestors.length - 1] !== this) {
            ancestors.pop();
        }
        if (ancestors.includes(value)) {
            return '[Circular]';
        }
        ancestors.push(value);
        return value;
    };
}

/** A JSON array of already-serialized entries. */
function batchBody(lines) {
    return '[' + lines.join(',') + ']';
}

/** "id.seq ACTION" for log lines about an entry; never throws. */
function describeEntry(line) {
    try {
        const entry = JSON.parse(line);
        return `${entry.id}${entry.seq ? '.' + entry.seq : ''} ${entry.action || '?'}`;
    } catch {
        return `unreadable entry ${JSON.stringify(String(line).slice(0, 80))}`;
    }
}

module.exports = { stampEntry, batchBody, describeEntry };
