// The op contract: every native op is declared once in native/binding (op.h), listed by native.ops(), implemented by
// the CPU backend (and by the CUDA one in a CUDA build), typed in lib/binding.ts with exactly its declared arguments,
// and called from lib/ with one object of named arguments. And no C++ exception, std or not, ends the process.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { native, type NativeOp, type NativeTestHooks } from '../lib/binding';
import { buildInfo, Tensor } from '../lib/index';
import { handleOf } from '../lib/tensor';

const root = join(__dirname, '..');
const ops: NativeOp[] = native.ops();
const byName = new Map(ops.map((op) => [op.name, op]));

/**
 * Ops that run on the CPU only, by design: creation (lib/tensor.ts moves results), merges, the references, and MPI's
 * collectives (host buffers; GPUs would exchange theirs through NCCL).
 */
const cpuOnly = [
  'adapterBackwardReference',
  'adapterForwardReference',
  'adapterMerge',
  'adapterUnmerge',
  'fromBFloat16',
  'fromFloat32Array',
  'full',
  'mpi',
  'orthogonalityPenalty',
  'randn',
  'uniform',
];

/** The TypeScript type each declared kind must have in lib/binding.ts. */
const typeOfKind: Record<string, (type: string) => boolean> = {
  tensor: (type) => type === 'NativeTensorHandle',
  tensorList: (type) => type === 'NativeTensorHandle[]',
  number: (type) => type === 'number',
  integer: (type) => type === 'number',
  boolean: (type) => type === 'boolean',
  shape: (type) => type === 'readonly number[]',
  int32Array: (type) => /^Int32Array(<ArrayBufferLike>)?$/.test(type),
  float32Array: (type) => /^Float32Array(<ArrayBufferLike>)?$/.test(type),
  uint16Array: (type) => /^Uint16Array(<ArrayBufferLike>)?$/.test(type),
  string: (type) => type === 'string' || type === 'Device' || type === 'DType',
  flags: (type) => type === 'GradientRequest',
};

interface DeclaredArgument {
  name: string;
  optional: boolean;
  type: string;
}

/** NativeBinding's methods that take one `args` object, with that object's properties, from lib/binding.ts. */
function typescriptOps(): Map<string, DeclaredArgument[]> {
  const file = join(root, 'lib', 'binding.ts');
  const program = ts.createProgram([file], { strict: true, target: ts.ScriptTarget.ES2022, skipLibCheck: true });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file)!;
  const result = new Map<string, DeclaredArgument[]>();
  source.forEachChild((node) => {
    if (!ts.isInterfaceDeclaration(node) || node.name.text !== 'NativeBinding') return;
    for (const member of node.members) {
      if (!ts.isMethodSignature(member) || member.parameters.length !== 1) continue;
      const parameter = member.parameters[0];
      if (parameter.name.getText(source) !== 'args') continue;
      const type = checker.getTypeAtLocation(parameter);
      const args = checker.getPropertiesOfType(type).map((property) => {
        const declared = checker.getTypeOfSymbolAtLocation(property, parameter);
        const optional = (property.flags & ts.SymbolFlags.Optional) !== 0;
        const text = checker.typeToString(optional ? checker.getNonNullableType(declared) : declared);
        return { name: property.name, optional, type: text };
      });
      result.set(member.name.getText(source), args);
    }
  });
  return result;
}

/** Every call `native.name(...)` in lib/, with its argument count, from the TypeScript syntax trees. */
function nativeCalls(): { file: string; name: string; count: number; objectLiteral: boolean }[] {
  const calls: { file: string; name: string; count: number; objectLiteral: boolean }[] = [];
  const visit = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) visit(path);
      else if (entry.name.endsWith('.ts')) {
        const source = ts.createSourceFile(path, readFileSync(path, 'utf8'), ts.ScriptTarget.ES2022, true);
        const walk = (node: ts.Node) => {
          if (
            ts.isCallExpression(node) &&
            ts.isPropertyAccessExpression(node.expression) &&
            node.expression.expression.getText(source) === 'native'
          ) {
            calls.push({
              file: path,
              name: node.expression.name.text,
              count: node.arguments.length,
              objectLiteral: node.arguments.length === 1 && ts.isObjectLiteralExpression(node.arguments[0]),
            });
          }
          node.forEachChild(walk);
        };
        walk(source);
      }
    }
  };
  visit(join(root, 'lib'));
  return calls;
}

describe('the op contract', () => {
  it('lists every op with its named arguments, a CPU kernel, and a CUDA kernel in a CUDA build', () => {
    expect(ops.length).toBeGreaterThanOrEqual(50);
    expect(new Set(ops.map((op) => op.name)).size).toBe(ops.length);
    for (const op of ops) {
      expect(op.cpu, `${op.name} has a CPU implementation`).toBe(true);
      expect(op.runs, op.name).toBe(cpuOnly.includes(op.name) ? 'cpu' : 'any');
      expect(op.cuda, `${op.name} has a CUDA implementation in a CUDA build`).toBe(
        buildInfo().cuda && op.runs === 'any',
      );
      expect(op.args.length, op.name).toBeGreaterThan(0);
      expect(new Set(op.args.map((arg) => arg.name)).size, op.name).toBe(op.args.length);
    }
    expect(ops.filter((op) => op.runs === 'cpu').map((op) => op.name)).toEqual(
      expect.arrayContaining(cpuOnly) as unknown,
    );
  });

  it('lib/binding.ts types every op with exactly its declared arguments, optionality and kinds', () => {
    const declared = typescriptOps();
    expect([...declared.keys()].sort()).toEqual(ops.map((op) => op.name).sort());
    for (const op of ops) {
      const typed = declared.get(op.name)!;
      expect(typed.map((arg) => arg.name).sort(), op.name).toEqual(op.args.map((arg) => arg.name).sort());
      for (const arg of op.args) {
        const property = typed.find((entry) => entry.name === arg.name)!;
        expect(property.optional, `${op.name}: ${arg.name} optional`).toBe(arg.optional);
        expect(
          typeOfKind[arg.kind](property.type),
          `${op.name}: ${arg.name} is ${arg.kind}, typed ${property.type}`,
        ).toBe(true);
      }
    }
  });

  it('lib/ calls every op with one object of named arguments (no positional list past 1)', () => {
    const calls = nativeCalls().filter((call) => byName.has(call.name));
    expect(calls.length).toBeGreaterThanOrEqual(50);
    for (const call of calls) {
      expect(call.objectLiteral, `${call.file}: native.${call.name}(...)`).toBe(true);
    }
    expect(Math.max(...nativeCalls().map((call) => call.count))).toBeLessThanOrEqual(1);
  });

  it('refuses positional arguments and misspelled names by name', () => {
    const a = Tensor.from([1, 2, 3]);
    const handle = handleOf(a, 'test', 'a');
    const untyped = native as unknown as Record<string, (...args: unknown[]) => unknown>;
    expect(() => untyped.scale(handle, 2)).toThrow(/scale: expected one object of named arguments/);
    expect(() => untyped.scale({ a: handle, alhpa: 2 })).toThrow(/scale: alpha must be a number/);
    expect(() => untyped.add({ a: handle })).toThrow(/add: b must be a Tensor/);
    a.dispose();
  });

  it('keeps native/binding within its budget: 1,800 lines, BIDORA_HAVE_CUDA at most twice (issue 13)', () => {
    const dir = join(root, 'native', 'binding');
    const text = readdirSync(dir)
      .map((file) => readFileSync(join(dir, file), 'utf8'))
      .join('');
    // As `cat native/binding/* | wc -l` counts: newline characters.
    const lines = text.split('\n').length - 1;
    const budget = "issue 13's budget: move pure C++ rules to native/core and keep declarations short";
    expect(lines, `native/binding is ${lines} lines; ${budget}`).toBeLessThanOrEqual(1800);
    const cuda = text.split('BIDORA_HAVE_CUDA').length - 1;
    expect(cuda, `native/binding mentions BIDORA_HAVE_CUDA ${cuda} times; ${budget}`).toBeLessThanOrEqual(2);
  });
});

describe('no C++ exception ends the process', () => {
  const hooks = native as unknown as NativeTestHooks;
  const kinds: [string, new (...args: never[]) => Error, RegExp][] = [
    ['length_error', Error, /native error: vector::reserve/],
    ['runtime_error', Error, /native error: a failed system call/],
    ['range_error', RangeError, /a bidora RangeError/],
    ['type_error', TypeError, /a bidora TypeError/],
    ['bad_alloc', RangeError, /out of memory/],
    ['int', Error, /an unknown C\+\+ exception/],
    ['foreign', Error, /an unknown C\+\+ exception/],
  ];

  it.each(kinds)('%s becomes a JavaScript error, and the addon keeps working', (kind, type, message) => {
    expect(() => hooks._throwForTest(kind)).toThrow(type);
    expect(() => hooks._throwForTest(kind)).toThrow(message);
    const after = Tensor.from([1, 2]);
    expect(Array.from(after.toFloat32Array())).toEqual([1, 2]);
    after.dispose();
  });

  it('in a fresh process too: every kind is caught and the process exits normally', () => {
    const script = `
      const { native } = require(${JSON.stringify(join(root, 'dist', 'binding.js'))});
      for (const kind of ${JSON.stringify(kinds.map(([kind]) => kind))}) {
        try { native._throwForTest(kind); console.log(kind, 'returned'); } catch (error) { console.log(kind, error.constructor.name); }
      }
      console.log('alive');`;
    const run = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/alive/);
    expect(run.stdout).not.toMatch(/returned/);
  });
});
