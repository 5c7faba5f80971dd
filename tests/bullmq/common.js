// Shared by the scripts: read the JSON spec (argv[2]), connect, print one JSON line.
'use strict';
const { UnrecoverableError } = require('bullmq');

function spec() {
  const arg = process.argv[2] || '{}';
  // "@path": the spec is in a file (large job lists exceed the argument limit).
  const s = JSON.parse(arg.startsWith('@') ? require('fs').readFileSync(arg.slice(1), 'utf8') : arg);
  s.connection = { host: s.host || '127.0.0.1', port: s.port, maxRetriesPerRequest: null };
  s.prefix = s.prefix || 'bull';
  return s;
}

function sleep(ms) {
  return new Promise(resolve => setTimeout(resolve, ms));
}

// Processor used by fail_jobs.js and consume_jobs.js: job.data.fail_times first
// attempts throw (all when absent in fail_jobs.js); job.data.unrecoverable throws
// an UnrecoverableError; job.data.error is the message.
function planned(job, failByDefault) {
  const failTimes = job.data && job.data.fail_times !== undefined ? job.data.fail_times : (failByDefault ? Infinity : 0);
  const message = (job.data && job.data.error) || 'planned failure';
  if (job.data && job.data.unrecoverable) throw new UnrecoverableError(message);
  if (job.attemptsMade < failTimes) throw new Error(message);
  return { ok: true, attempt: job.attemptsMade + 1 };
}

function done(result) {
  process.stdout.write(JSON.stringify(result) + '\n');
}

module.exports = { spec, sleep, planned, done };
