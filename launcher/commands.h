/*
 * commands.h: the subcommands of the spotrun binary. Each takes the
 * arguments after its own name and returns the process exit code.
 */
#ifndef SPOTRUN_COMMANDS_H
#define SPOTRUN_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_cp(int argc, char **argv);
int cmd_launch(int argc, char **argv);

#endif
