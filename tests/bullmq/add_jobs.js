// Adds spec.jobs ([{name, data, opts}]) with BullMQ's own Queue.add; prints their ids.
'use strict';
const { Queue } = require('bullmq');
const { spec, done } = require('./common');

(async () => {
  const s = spec();
  const queue = new Queue(s.queue, { connection: s.connection, prefix: s.prefix });
  const ids = [];
  for (const job of s.jobs) {
    ids.push((await queue.add(job.name, job.data, job.opts || {})).id);
  }
  await queue.close();
  done({ ids });
})().catch(err => { console.error(err); process.exit(1); });
