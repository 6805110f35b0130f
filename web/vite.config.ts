// The browser demo (web/): `vite web` serves it, `vite build web` writes web/dist. Shared src/
// files that import node modules at their top get the stand-ins of node-stub.ts (see there).
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const stub = fileURLToPath(new URL('./node-stub.ts', import.meta.url));

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  resolve: {
    alias: ['os', 'worker_threads', 'fs/promises', 'crypto', 'path'].flatMap((m) => [
      { find: `node:${m}`, replacement: stub },
    ]),
  },
  server: { fs: { allow: ['..'] } },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
