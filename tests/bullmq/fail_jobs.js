// Adds spec.jobs with Queue.add and runs a Worker that fails them (see common.planned;
// data.succeed: true completes), until every job has completed or failed for good.
// Prints [{id, state, attemptsMade, finishedOn, failedReason}] in the order added.
'use strict';
const { Queue, Worker } = require('bullmq');
const { spec, sleep, planned, done } = require('./common');

(async () => {
  const s = spec();
  const opts = { connection: s.connection, prefix: s.prefix };
  const queue = new Queue(s.queue, Object.assign({ streams: { events: { maxLen: s.max_events || 10000 } } }, opts));
  const worker = new Worker(s.queue, async job => {
    if (job.data && job.data.succeed) return { ok: true };
    return planned(job, true);
  }, Object.assign({ concurrency: s.concurrency || 10, autorun: s.autorun !== false }, opts));
  worker.on('error', () => {});
  let finished = 0;
  worker.on('completed', () => { finished += 1; });
  worker.on('failed', job => { if (job && job.finishedOn) finished += 1; });  // failed for good
  const ids = [];
  if (s.rate) {
    // Offered load: spec.rate jobs a second, added in 10 ms ticks.
    const started = Date.now();
    for (let i = 0; i < s.jobs.length;) {
      const due = Math.min(s.jobs.length, Math.floor((Date.now() - started) * s.rate / 1000) + 1);
      if (due > i) {
        const added = await queue.addBulk(s.jobs.slice(i, due));
        added.forEach(job => ids.push(job.id));
        i = due;
      }
      await sleep(10);
    }
  } else {
    const chunk = s.chunk || 500;
    for (let i = 0; i < s.jobs.length; i += chunk) {
      const added = await queue.addBulk(s.jobs.slice(i, i + chunk));
      added.forEach(job => ids.push(job.id));
    }
  }
  const deadline = Date.now() + (s.timeout_ms || 60000);
  for (;;) {
    if (finished >= ids.length) break;
    if (Date.now() > deadline) throw new Error('timed out: ' + finished + ' of ' + ids.length + ' jobs finished');
    await sleep(20);
  }
  await worker.close();
  const result = [];
  for (const id of (s.summary ? [] : ids)) {
    const job = await queue.getJob(id);
    result.push(job ? { id, state: await job.getState(), attemptsMade: job.attemptsMade, finishedOn: job.finishedOn,
      failedReason: job.failedReason || null } : { id, state: 'removed' });
  }
  await queue.close();
  done(s.summary ? { count: ids.length } : result);
})().catch(err => { console.error(err); process.exit(1); });
