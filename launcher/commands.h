/*
 * commands.h: the subcommands of the spotrun binary. Each takes the
 * arguments after its own name and returns the process exit code.
 */
#ifndef SPOTRUN_COMMANDS_H
#define SPOTRUN_COMMANDS_H

#include <string.h>

int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_launch(int argc, char **argv);

/* "--help" or "-h" */
static inline int arg_is_help(const char *a)
{
    return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

/* An argument that looks like an option where a URI belongs ("-" alone
 * is a name, as in the shell) */
static inline int arg_is_option(const char *a)
{
    return a[0] == '-' && a[1] != '\0';
}

#endif
