'use strict';

// One POST of one batch to mtactl, and what its answer means for the batch.

/**
 * @typedef {{kind: 'accepted', rejected: Array<{index: number, error: string}>}
 *   | {kind: 'too_large'}
 *   | {kind: 'transient', reason: string, retryAfterMs: number}
 *   | {kind: 'refused', status: number, reason: string}} Outcome
 */

const REASON_LIMIT = 500;

/**
 * @param {{endpoint: string, apiKey: string, timeoutMs: number}} settings
 * @param {string} body a JSON array
 * @returns {Promise<Outcome>}
 */
async function postBatch(settings, body) {
    let response;
    let text;
    try {
        response = await fetch(settings.endpoint, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${settings.apiKey}` },
            body,
            // A redirect would turn the POST into a GET elsewhere; it is a wrong url, shown as a refusal.
            redirect: 'manual',
            signal: AbortSignal.timeout(settings.timeoutMs)
        });
        text = await response.text();
    } catch (err) {
        return { kind: 'transient', reason: describeNetworkError(err), retryAfterMs: 0 };
    }
    return classify(response.status, text, response.headers.get('retry-after'));
}

/**
 * 202 is the only acknowledgement: mtactl answers it once the batch is durable. 408, 429 and 5xx are worth
 * retrying; 413 is answered by splitting; any other status (a 4xx, or a 2xx/3xx from something that is
 * not mtactl's ingest route) will not change by sending the same batch again.
 */
function classify(status, text, retryAfter) {
    if (status === 202) {
        return { kind: 'accepted', rejected: rejectedOf(text) };
    }
    if (status === 413) {
        return { kind: 'too_large' };
    }
    const reason = `HTTP ${status}: ${String(text).slice(0, REASON_LIMIT)}`;
    if (status === 408 || status === 429 || status >= 500) {
        return { kind: 'transient', reason, retryAfterMs: retryAfterMs(retryAfter) };
    }
    return { kind: 'refused', status, reason };
}

function rejectedOf(text) {
    try {
        const answer = JSON.parse(text);
        return Array.isArray(answer.rejected) ? answer.rejected : [];
    } catch {
        return [];
    }
}

function retryAfterMs(value) {
    const seconds = Number(value);
    return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0;
}

function describeNetworkError(err) {
    if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
        return 'no answer within timeoutMs';
    }
    // fetch wraps the socket error (ECONNREFUSED, ENOTFOUND, …) as its cause
    const cause = err && err.cause;
    return [err && err.message, cause && (cause.code || cause.message)].filter(Boolean).join(': ');
}

module.exports = { postBatch, classify };
