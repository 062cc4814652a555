// Vite build of the console. The output is plain static files that
// tokenauditd serves under /console/ (worker/console.c): hashed names under
// assets/, no inline script or style (the gateway's Content-Security-Policy
// forbids both), nothing loaded from elsewhere at run time.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/console/',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    // CMake passes its build directory (build/console); `npm run build` alone writes dist/.
    outDir: process.env.TA_CONSOLE_OUT || 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    assetsInlineLimit: 0,            // no data: URIs (fonts would break under font-src 'self')
    modulePreload: { polyfill: false }, // the polyfill is not needed by the browsers we test
    sourcemap: false,
    target: 'es2020',
    reportCompressedSize: false,
  },
  server: {
    // `npm run dev` against a gateway on 127.0.0.1:8080 (see README.md)
    proxy: { '/api': process.env.TA_GATEWAY || 'http://127.0.0.1:8080',
             '/v1': process.env.TA_GATEWAY || 'http://127.0.0.1:8080' },
  },
});
