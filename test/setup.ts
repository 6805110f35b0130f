// Loaded before every test file (npm test passes --import). Property tests use one fixed seed, so
// CI is reproducible. FC_SEED=random explores new cases, and FC_SEED=<n> replays a run; a failing
// property prints its seed.
import fc from 'fast-check';

const env = process.env.FC_SEED;
if (env !== 'random') fc.configureGlobal({ seed: env === undefined ? 20261124 : Number(env) });
