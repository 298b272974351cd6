/// <reference types="vitest/config" />
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// `npm run dev` proxies the API (HTTP and the chat WebSocket) to a local server:
// LOOPCHAT_API=http://127.0.0.1:8765 npm run dev   (default http://127.0.0.1:8000)
const api = process.env.LOOPCHAT_API ?? 'http://127.0.0.1:8000';

export default defineConfig({
  plugins: [react()],
  server: {
    proxy: {
      '/v1': { target: api, ws: true },
      '/healthz': { target: api },
      '/readyz': { target: api },
    },
  },
  build: {
    outDir: 'dist',
    sourcemap: false,
    chunkSizeWarningLimit: 250,
    rollupOptions: {
      output: {
        // Libraries in their own long-cached chunks; chart.js goes with the lazy dashboard.
        manualChunks(id: string) {
          if (/node_modules\/(react|react-dom|scheduler)\//.test(id)) return 'react';
          if (/node_modules\/(marked|dompurify|highlight\.js)\//.test(id)) return 'markdown';
          return undefined;
        },
      },
    },
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.ts'],
    css: false,
    // Modest CPU: the machine is shared with the backend's test suites.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
