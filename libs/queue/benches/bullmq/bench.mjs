// The queue bench's peer: adds `jobs` no-op jobs to BullMQ (addBulk, in chunks), processes
// and acks them with one Worker of `concurrency`, on the same Redis as ours, and prints
// one JSON line: {"jobs", "seconds", "jobs_per_sec", "bullmq"}. Its keys live under a
// prefix of the caller's and are deleted at the end.
//
// node bench.mjs <redis url> <key prefix> <jobs> <concurrency>
import { createRequire } from 'node:module';
import { Queue, Worker } from 'bullmq';

const [url = 'redis://127.0.0.1:6379', prefix = 'atelier-bench-bullmq', jobsArg = '100000', concurrencyArg = '100'] =
  process.argv.slice(2);
const jobs = Number(jobsArg);
const concurrency = Number(concurrencyArg);
const { hostname, port, password, username } = new URL(url);
const connection = {
  host: hostname,
  port: Number(port || 6379),
  password: password || undefined,
  username: username || undefined,
  maxRetriesPerRequest: null,
};
const version = createRequire(import.meta.url)('bullmq/package.json').version;
const name = 'noop';

const queue = new Queue(name, { connection, prefix });
await queue.waitUntilReady();

let done = 0;
let finish;
const finished = new Promise((resolve) => (finish = resolve));
const started = process.hrtime.bigint();
const worker = new Worker(name, async () => {}, {
  connection,
  prefix,
  concurrency,
  removeOnComplete: { count: 0 },
  removeOnFail: { count: 0 },
});
worker.on('completed', () => {
  done += 1;
  if (done === jobs) finish();
});
worker.on('error', (err) => {
  console.error(`bullmq worker: ${err}`);
});

// Added in chunks as a producer would, while the worker already runs.
const chunk = 1000;
for (let at = 0; at < jobs; at += chunk) {
  const batch = [];
  for (let i = at; i < Math.min(jobs, at + chunk); i += 1) {
    batch.push({ name, data: { i }, opts: { removeOnComplete: true, removeOnFail: true } });
  }
  await queue.addBulk(batch);
}
await finished;
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
console.log(JSON.stringify({ jobs, seconds, jobs_per_sec: jobs / seconds, bullmq: version }));
process.exit(0);
