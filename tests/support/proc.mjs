// Starting and stopping the rig's processes. Each runs in its own process group so that
// stopping it also stops what it spawned (anvil under chain.mjs), even on a hard kill.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const live = new Set();
process.on('exit', () => {
  for (const child of live) killGroup(child, 'SIGKILL');
});

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

export const supportScript = (name) => fileURLToPath(new URL(`./${name}`, import.meta.url));

export function startProcess(cmd, args, { env, stdout = 'pipe', cwd } = {}) {
  // stdin stays a pipe: children that watch it exit when this process dies
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, detached: true, stdio: ['pipe', stdout, 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-20000);
  });
  child.on('exit', () => live.delete(child));
  const proc = {
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      killGroup(child, 'SIGTERM');
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(timer);
      killGroup(child, 'SIGKILL'); // stragglers left in the group
    },
  };
  return proc;
}

// Starts a support script and resolves with its `{"ready":true,...}` line.
export async function startReady(script, args = [], { timeoutMs = 30000, env } = {}) {
  const proc = startProcess(process.execPath, [supportScript(script), ...args], { env });
  const lines = createInterface({ input: proc.child.stdout });
  try {
    const info = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${script} not ready after ${timeoutMs} ms`)), timeoutMs);
      lines.once('line', (line) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line));
        } catch {
          reject(new Error(`${script} printed ${line}`));
        }
      });
      proc.child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${script} exited with ${code}: ${proc.stderr()}`));
      });
    });
    if (!info.ready) throw new Error(`${script} not ready: ${JSON.stringify(info)}`);
    proc.info = info;
    return proc;
  } catch (err) {
    await proc.stop();
    throw err;
  }
}

// Runs a support script to completion and parses its single JSON output line.
export async function runJson(script, args, { timeoutMs = 60000 } = {}) {
  const proc = startProcess(process.execPath, [supportScript(script), ...args]);
  proc.child.stdin.end();
  let out = '';
  proc.child.stdout.setEncoding('utf8');
  proc.child.stdout.on('data', (d) => {
    out += d;
  });
  const timer = setTimeout(() => proc.stop(), timeoutMs);
  const [code] = await once(proc.child, 'close');
  clearTimeout(timer);
  const line = out.trim().split('\n').pop();
  try {
    return { code, ...JSON.parse(line) };
  } catch {
    throw new Error(`${script} exited ${code} without JSON: ${out} ${proc.stderr()}`);
  }
}
