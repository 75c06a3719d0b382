// Command-line options: node:util's parseArgs, plus a JSON config file whose keys fill what the flags leave unset.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  description: string;
  default?: string | boolean;
  required?: boolean;
  /** May be given more than once: its value is then an array of strings, in order (a JSON array in --config). */
  multiple?: boolean;
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>;

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** A command that cannot go on for a reason outside the arguments (missing data, no network): no stack trace. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandError';
  }
}

export function helpText(command: string, summary: string, specs: Record<string, OptionSpec>): string {
  const lines = Object.entries(specs).map(([name, spec]) => {
    const flag = spec.type === 'boolean' ? `--${name}` : `--${name} <value>`;
    const repeat = spec.multiple ? ' (repeatable)' : '';
    const extra = spec.required
      ? ' (required)'
      : spec.default !== undefined
        ? ` (default ${String(spec.default)})`
        : '';
    return `  ${flag.padEnd(28)} ${spec.description}${repeat}${extra}`;
  });
  return `Usage: bidora ${command} [options]\n\n${summary}\n\nOptions:\n${lines.join('\n')}\n  ${'--config <file.json>'.padEnd(28)} read options from a JSON file (flags win)\n  ${'-h, --help'.padEnd(28)} show this help\n`;
}

/** Parsed options as strings and booleans; undefined when neither a flag, the config file nor a default gives one. */
export function parseOptions(command: string, argv: string[], specs: Record<string, OptionSpec>): OptionValues {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        ...Object.fromEntries(
          Object.entries(specs).map(([name, spec]) => [name, { type: spec.type, multiple: spec.multiple ?? false }]),
        ),
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    throw new UsageError(`${(error as Error).message} (see bidora ${command} --help)`);
  }
  const values: OptionValues = { ...parsed.values };
  if (values.config !== undefined) {
    let config: Record<string, unknown>;
    try {
      config = JSON.parse(readFileSync(values.config as string, 'utf8')) as Record<string, unknown>;
    } catch (error) {
      throw new UsageError(`cannot read --config ${String(values.config)}: ${(error as Error).message}`);
    }
    for (const [key, value] of Object.entries(config)) {
      const name = key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
      if (!(name in specs)) throw new UsageError(`unknown option "${key}" in ${String(values.config)}`);
      if (values[name] !== undefined) continue;
      if (specs[name].multiple) values[name] = (Array.isArray(value) ? value : [value]).map(String);
      else values[name] = typeof value === 'boolean' ? value : String(value);
    }
  }
  if (values.help) return values;
  for (const [name, spec] of Object.entries(specs)) {
    if (values[name] === undefined) values[name] = spec.default;
    if (spec.required && values[name] === undefined) {
      throw new UsageError(`--${name} is required (see bidora ${command} --help)`);
    }
  }
  return values;
}

/**
 * The parsed options of `command`, or undefined after printing its help when --help was given: what every command
 * starts with.
 */
export function commandOptions(
  command: string,
  summary: string,
  argv: string[],
  specs: Record<string, OptionSpec>,
): OptionValues | undefined {
  const values = parseOptions(command, argv, specs);
  if (!values.help) return values;
  process.stdout.write(helpText(command, summary, specs));
  return undefined;
}

export function numberOption(values: OptionValues, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (typeof raw !== 'string' || raw.trim() === '' || !Number.isFinite(value)) {
    throw new UsageError(`--${name} must be a number, got ${JSON.stringify(raw)}`);
  }
  return value;
}
