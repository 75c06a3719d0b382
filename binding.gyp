# Fallback build with node-gyp for machines without CMake: the same CPU sources and flags, no CUDA, no MPI (native/mpi
# compiles to stubs that say so).
{
  "target_defaults": {
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++1y", "-std=gnu++17"],
    "cflags_cc": ["-std=c++17", "-O3", "-fexceptions", "-fno-math-errno"],
    "include_dirs": ["<!(node -p \"require('node-api-headers').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"]
  },
  "targets": [
    {
      "target_name": "bidora_avx2",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f => /_avx2\\.cc$/.test(f)).map(f => 'native/cpu/' + f).join(' ')\")"],
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
    },
    {
      "target_name": "bidora_avx512",
      "type": "static_library",
      "sources": ["<!@(node -p \"require('fs').readdirSync('native/cpu').filter(f => /_avx512\\.cc$/.test(f)).map(f => 'native/cpu/' + f).join(' ')\")"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"]
    },
    {
      "target_name": "bidora",
      "dependencies": ["bidora_avx2", "bidora_avx512"],
      "sources": [
        "<!@(node -p \"['core', 'cpu', 'binding', 'mpi'].flatMap(d => require('fs').readdirSync('native/' + d).filter(f => /\\.cc$/.test(f) && !/_avx(2|512)\\.cc$/.test(f)).map(f => 'native/' + d + '/' + f)).join(' ')\")"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["BIDORA_VERSION=\"<!(node -p \"require('./package.json').version\")\""],
      "libraries": ["-pthread"]
    }
  ]
}
