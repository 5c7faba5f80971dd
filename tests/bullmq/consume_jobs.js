// A Worker on spec.queue that processes jobs (added by anyone: here, the pack's
// bullmq_add_job) until spec.expect jobs have completed or failed for good.
// Each attempt is recorded as BullMQ hands it to the processor. Prints
// {attempts: [{id, name, data, opts, attemptsMade, timestamp, delay, priority, startedAt}],
//  finished: {id: {state, attemptsMade, finishedOn, processedOn, returnvalue, failedReason}}}.
'use strict';
const { Queue, Worker } = require('bullmq');
const { spec, sleep, planned, done } = require('./common');

(async () => {
  const s = spec();
  const opts = { connection: s.connection, prefix: s.prefix };
  const attempts = [];
  const finished = {};
  const worker = new Worker(s.queue, async job => {
    attempts.push({ id: job.id, name: job.name, data: job.data, opts: job.opts, attemptsMade: job.attemptsMade,
      timestamp: job.timestamp, delay: job.delay, priority: job.priority, startedAt: Date.now() });
    return planned(job, false);
  }, Object.assign({ concurrency: 1 }, opts));
  worker.on('error', () => {});
  worker.on('completed', job => {
    finished[job.id] = { state: 'completed', attemptsMade: job.attemptsMade, finishedOn: job.finishedOn,
      processedOn: job.processedOn, returnvalue: job.returnvalue, failedReason: null };
  });
  worker.on('failed', job => {
    if (job && job.finishedOn) {
      finished[job.id] = { state: 'failed', attemptsMade: job.attemptsMade, finishedOn: job.finishedOn,
        processedOn: job.processedOn, returnvalue: null, failedReason: job.failedReason };
    }
  });
  const deadline = Date.now() + (s.timeout_ms || 30000);
  while (Object.keys(finished).length < s.expect && Date.now() < deadline) await sleep(20);
  await sleep(s.linger_ms || 0);
  await worker.close();
  done({ attempts, finished });
})().catch(err => { console.error(err); process.exit(1); });
