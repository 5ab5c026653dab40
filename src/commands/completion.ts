// `ivm completion bash|zsh|fish`: a shell completion script made from the commander program itself
// (its commands, subcommands, options, and which arguments are machine names), so it never drifts
// from the CLI. Machine names are asked at completion time through the hidden
// `ivm completion --machines`, which lists the machines of the project around the working directory.
import fs from 'node:fs';
import { Argument, type Command, Option } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { BadInputError } from '../errors.ts';
import { findProject, machineNames } from '../core/machine/project.ts';

export const SHELLS = ['bash', 'zsh', 'fish'] as const;
type Shell = (typeof SHELLS)[number];

/** What completes at one command path ("" is ivm itself, "net create" a subcommand). */
export interface CompletionNode {
  path: string;
  /** Its subcommands (the implicit `help` included). */
  subcommands: string[];
  /** Every flag it accepts: its own, the help option, and the global ones. */
  options: string[];
  /** The flags among them that take a value (nothing completes for that value). */
  valued: string[];
  /** What its first argument is: one machine, machine names (variadic), or one of these words. */
  argument?: { kind: 'machine' } | { kind: 'machines' } | { kind: 'words'; words: string[] };
}

/** A word the scripts can carry unquoted inside single quotes: commands and flags are such words. */
const SAFE_WORD = /^[A-Za-z0-9][A-Za-z0-9._-]*$|^--?[A-Za-z0-9][A-Za-z0-9._-]*$/;

const isMachineArgument = (argument: Argument | undefined): boolean => /^machine names?\b/i.test(argument?.description ?? '');

/** The completion table of a program, from commander's own view of it (what `--help` shows). */
export function completionNodes(program: Command): CompletionNode[] {
  const nodes: CompletionNode[] = [];
  const globalOptions = program.options.filter((option) => !option.hidden && option.long !== '--version');
  const walk = (command: Command, path: string, parent: Command | undefined): void => {
    const help = command.createHelp();
    const subcommands = help.visibleCommands(command);
    const own = help.visibleOptions(command);
    const options = command === program ? own : [...own, ...globalOptions];
    const flags = (list: Option[]) => [...new Set(list.flatMap((o) => [o.short, o.long]).filter((f): f is string => f !== undefined && SAFE_WORD.test(f)))];
    const first = command.registeredArguments[0];
    let argument: CompletionNode['argument'];
    const isHelpCommand = parent !== undefined && command.name() === 'help' && !parent.commands.includes(command);
    if (isHelpCommand) {
      argument = { kind: 'words', words: parent.createHelp().visibleCommands(parent).map((c) => c.name()).filter((n) => n !== 'help' && SAFE_WORD.test(n)) };
    } else if (isMachineArgument(first)) {
      argument = { kind: first!.variadic ? 'machines' : 'machine' };
    }
    nodes.push({
      path,
      subcommands: subcommands.map((c) => c.name()).filter((n) => SAFE_WORD.test(n)),
      options: flags(options),
      valued: flags(options.filter((o) => o.required || o.optional)),
      ...(argument ? { argument } : {}),
    });
    for (const sub of subcommands) {
      if (!SAFE_WORD.test(sub.name())) continue;
      walk(sub, path === '' ? sub.name() : `${path} ${sub.name()}`, command);
    }
  };
  walk(program, '', undefined);
  return nodes;
}

/** Single-quoted for sh (bash, zsh). */
const shQuote = (text: string): string => `'${text.replace(/'/g, `'\\''`)}'`;
/** Single-quoted for fish. */
const fishQuote = (text: string): string => `'${text.replace(/[\\']/g, (c) => `\\${c}`)}'`;

/** The command that lists the machines at completion time: this very ivm (node and its script). */
function machinesCommand(quote: (text: string) => string): string {
  const script = process.argv[1] ? fs.realpathSync(process.argv[1]) : 'ivm';
  return `${quote(process.execPath)} ${quote(script)} completion --machines 2>/dev/null`;
}

function argumentWord(node: CompletionNode): string | undefined {
  if (!node.argument) return undefined;
  return node.argument.kind === 'words' ? `words ${node.argument.words.join(' ')}` : node.argument.kind;
}

/** The tables as sh functions (bash and zsh read them alike): each prints one line of words. */
function shTables(nodes: CompletionNode[]): string {
  const table = (name: string, value: (node: CompletionNode) => string | undefined) => {
    const cases = nodes
      .map((node) => [node.path, value(node)] as const)
      .filter(([, words]) => words !== undefined && words !== '')
      .map(([path, words]) => `    ${shQuote(path)}) echo ${shQuote(words!)} ;;`);
    return [`${name}() {`, '  case $1 in', ...cases, '  esac', '}'].join('\n');
  };
  return [
    table('_ivm_subcommands', (n) => n.subcommands.join(' ')),
    table('_ivm_options', (n) => n.options.join(' ')),
    table('_ivm_valued', (n) => n.valued.join(' ')),
    table('_ivm_argument', argumentWord),
    `_ivm_machines() { ${machinesCommand(shQuote)}; }`,
  ].join('\n');
}

/**
 * The words before the cursor, read the same way in bash and zsh: options are skipped (with the
 * value of one that takes a value), a subcommand word moves down the tree while no argument was
 * given yet, `--` ends completion (what follows is a remote command, for ssh).
 */
const SH_WALK = `  local cmd='' word='' skip='' args=0 i
  for ((i = 1; i < last; i++)); do
    word=\${ivm_words[i]}
    if [[ -n $skip ]]; then skip=''; continue; fi
    if [[ $word == -- ]]; then return 1; fi
    if [[ $word == -* ]]; then
      if [[ $word != *=* && " $(_ivm_valued "$cmd") " == *" $word "* ]]; then skip=1; fi
      continue
    fi
    if ((args == 0)) && [[ " $(_ivm_subcommands "$cmd") " == *" $word "* ]]; then
      cmd=\${cmd:+$cmd }$word
    else
      args=$((args + 1))
    fi
  done
  [[ -z $skip ]] || return 1
  if [[ $cur == -* ]]; then
    _ivm_candidates=$(_ivm_options "$cmd")
    return 0
  fi
  _ivm_candidates=''
  ((args == 0)) && _ivm_candidates=$(_ivm_subcommands "$cmd")
  local argument
  argument=$(_ivm_argument "$cmd")
  case $argument in
    machine) ((args == 0)) && _ivm_candidates="$_ivm_candidates $(_ivm_machines)" ;;
    machines) _ivm_candidates="$_ivm_candidates $(_ivm_machines)" ;;
    words\\ *) ((args == 0)) && _ivm_candidates="$_ivm_candidates \${argument#words }" ;;
  esac
  return 0`;

function bashScript(nodes: CompletionNode[]): string {
  return `# bash completion for ivm, made by \`ivm completion bash\` from ivm's own command definitions.
# Load it from ~/.bashrc:   source <(ivm completion bash)
# or save it once:          ivm completion bash > ~/.local/share/bash-completion/completions/ivm
# Machine names come from \`ivm completion --machines\` (the project around the working directory).
${shTables(nodes)}
_ivm_words() {
  local cur=$1 last=$2
  shift 2
  local -a ivm_words=("$@")
${SH_WALK}
}
_ivm() {
  local _ivm_candidates
  COMPREPLY=()
  _ivm_words "\${COMP_WORDS[COMP_CWORD]}" "$COMP_CWORD" "\${COMP_WORDS[@]}" || return 0
  COMPREPLY=($(compgen -W "$_ivm_candidates" -- "\${COMP_WORDS[COMP_CWORD]}"))
}
complete -F _ivm ivm
`;
}

function zshScript(nodes: CompletionNode[]): string {
  return `#compdef ivm
# zsh completion for ivm, made by \`ivm completion zsh\` from ivm's own command definitions.
# Load it from ~/.zshrc (after compinit):   source <(ivm completion zsh)
# or save it once as _ivm in a folder of $fpath:   ivm completion zsh > ~/.zfunc/_ivm
# Machine names come from \`ivm completion --machines\` (the project around the working directory).
${shTables(nodes)}
_ivm_words() {
  setopt localoptions ksharrays
  local cur=$1 last=$2
  shift 2
  local -a ivm_words
  ivm_words=("$@")
${SH_WALK}
}
_ivm() {
  local _ivm_candidates
  # words[1] is ivm; the walk counts from 0 as bash does.
  _ivm_words "\${words[CURRENT]}" "$((CURRENT - 1))" "\${words[@]}" || return 1
  compadd -- \${=_ivm_candidates}
}
if [[ \${zsh_eval_context[-1]} == loadautofunc ]]; then
  _ivm "$@"
else
  compdef _ivm ivm
fi
`;
}

function fishScript(nodes: CompletionNode[]): string {
  const table = (name: string, value: (node: CompletionNode) => string | undefined) => {
    const cases = nodes
      .map((node) => [node.path, value(node)] as const)
      .filter(([, words]) => words !== undefined && words !== '')
      .flatMap(([path, words]) => [`        case ${fishQuote(path)}`, `            echo ${fishQuote(words!)}`]);
    return [`function ${name}`, '    switch "$argv[1]"', ...cases, '    end', 'end'].join('\n');
  };
  return `# fish completion for ivm, made by \`ivm completion fish\` from ivm's own command definitions.
# Load it from ~/.config/fish/config.fish:   ivm completion fish | source
# or save it once:   ivm completion fish > ~/.config/fish/completions/ivm.fish
# Machine names come from \`ivm completion --machines\` (the project around the working directory).
${table('__ivm_subcommands', (n) => n.subcommands.join(' '))}
${table('__ivm_options', (n) => n.options.join(' '))}
${table('__ivm_valued', (n) => n.valued.join(' '))}
${table('__ivm_argument', argumentWord)}
function __ivm_machines
    ${machinesCommand(fishQuote)}
end
function __ivm_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmd ''
    set -l skip 0
    set -l args 0
    for word in $tokens[2..-1]
        if test $skip = 1
            set skip 0
            continue
        end
        if test "$word" = --
            return
        end
        if string match -q -- '-*' "$word"
            if not string match -q -- '*=*' "$word"; and contains -- "$word" (__ivm_valued "$cmd" | string split ' ')
                set skip 1
            end
            continue
        end
        if test $args = 0; and contains -- "$word" (__ivm_subcommands "$cmd" | string split ' ')
            set cmd (string trim -- "$cmd $word")
        else
            set args (math $args + 1)
        end
    end
    test $skip = 1; and return
    if string match -q -- '-*' "$cur"
        __ivm_options "$cmd" | string split ' '
        return
    end
    test $args = 0; and __ivm_subcommands "$cmd" | string split ' '
    set -l argument (__ivm_argument "$cmd")
    switch "$argument"
        case machine
            test $args = 0; and __ivm_machines
        case machines
            __ivm_machines
        case 'words *'
            test $args = 0; and string split ' ' -- (string replace 'words ' '' -- "$argument")
    end
end
complete -c ivm -f -a '(__ivm_complete)'
`;
}

export function completionScript(program: Command, shell: Shell): string {
  const nodes = completionNodes(program);
  return shell === 'bash' ? bashScript(nodes) : shell === 'zsh' ? zshScript(nodes) : fishScript(nodes);
}

/** The machine names for completion: none (and no error) outside a project. */
function listMachines(): string[] {
  try {
    return machineNames(findProject());
  } catch {
    return [];
  }
}

export function registerCompletion(program: Command, _context: ContextFactory): void {
  program
    .command('completion')
    .addArgument(new Argument('[shell]', 'the shell').choices(SHELLS))
    .description('print the completion script for bash, zsh or fish: commands, options and machine names (README.md, "Shell completion")')
    .addOption(new Option('--machines', 'list the machine names, one a line (what the scripts ask at completion time)').hideHelp())
    .action((shell: Shell | undefined, options: { machines?: boolean }) => {
      if (options.machines) {
        for (const name of listMachines()) process.stdout.write(`${name}\n`);
        return;
      }
      if (!shell) throw new BadInputError(`ivm completion: name the shell: ${SHELLS.join(', ')}`, 'e.g. source <(ivm completion bash)');
      process.stdout.write(completionScript(program, shell));
    });
}
