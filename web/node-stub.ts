// Stand-ins for the node modules that some shared src/ files import at their top (the CPU
// backend's worker pool, file helpers of the tokenizer and checkpoints). The demo never calls
// them; these keep the browser bundle (and Vite's dev server, which does not tree-shake) loading.
const unavailable = (name: string) => () => {
  throw new Error(`${name} is not available in the browser`);
};
export const availableParallelism = () => 1;
export const Worker = class {
  constructor() {
    throw new Error('worker_threads is not available in the browser');
  }
};
export const readFile = unavailable('fs.readFile');
export const open = unavailable('fs.open');
export const rename = unavailable('fs.rename');
export const unlink = unavailable('fs.unlink');
export const randomBytes = unavailable('crypto.randomBytes');
export const dirname = (p: string) => p.replace(/\/[^/]*$/, '');
export default { availableParallelism, cpus: () => [{}] };
