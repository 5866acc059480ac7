"""Every setting of every command, declared once; parsers, environment handling and docs come from it.

- `values`: value types (text -> typed value, or a one-line ValueError), each with a few bad values.
- `setting`: `Setting`, one declaration: flag, type, default, help, variables, the consumer's field.
- `shared`: settings several commands take (server, logging, ports, the proxy, pools).
- `commands`: each command's settings in help order, and the settings only it takes.
- `resolve`: flag, else `LORA_SYNCER_<FLAG>`, else legacy variables, else the default; typed and
  validated, a bad value is `UsageError("--flag / VARIABLE: 'x' is not a number")`.
- `parser`: the argparse parsers generated from the declarations (one-line errors, exit 2).

The consumers get typed objects built from the resolved values: `SyncerSettings`
(`lora_syncer.settings.syncer_settings_from_args`) and `ProxyOptions`
(`lora_syncer.proxy.options.proxy_options_from_args`); each copies the settings of its
sections by `Setting.target`.

Adding a setting (say `--state-dir` to `run`):

1. Declare it once, in `commands.py` if one command takes it, in `shared.py` if several do:
   `Setting("--state-dir", PATH, default=None, help="...")`. Pick the value type from `values`
   (or add one there, with the `bad` values it refuses); `action="switch"` for `--x/--no-x`,
   `action="append"` for a repeatable list; `field="..."` when the consumer's attribute has
   another name; `env=None` only if it must not be read from the environment.
2. Put it in the command's section list in `commands.py` (for a shared one, in each command's).
3. Give the consumer the field: `SyncerSettings` for the syncer's sections (`RECONCILING`...),
   `ProxyOptions` for `PROXY`/`POOLS` (the builders copy every declared setting by name, so
   there is nothing else to wire); a command module otherwise reads `args.state_dir`.
4. Run `scripts/gen_config_docs.py` for the docs table. The bad-value tests pick it up by
   themselves from its type.
"""

from lora_syncer.options.resolve import UsageError
from lora_syncer.options.setting import ENV_PREFIX, Setting, env_name

__all__ = ["ENV_PREFIX", "Setting", "UsageError", "env_name"]
