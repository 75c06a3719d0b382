// Finds a Python that can import torch: Debian's python3-torch installs for the system interpreter, which a pyenv or
// venv python3 earlier on the PATH hides.
import { spawnSync } from 'node:child_process';

export function pythonWithTorch() {
  for (const candidate of [process.env.BIDORA_BENCH_PYTHON, 'python3', '/usr/bin/python3']) {
    if (candidate && spawnSync(candidate, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0) return candidate;
  }
  return 'python3';
}
