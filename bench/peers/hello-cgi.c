/* The smallest possible CGI program: prints a fixed response and exits. The lower
 * bound for CGI start-up (exec, dynamic loading of libc, one write, exit).
 * Build: gcc -O2 -o hello-cgi hello-cgi.c */
#include <unistd.h>

static const char response[] = "Status: 200 OK\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 12\r\n"
                               "\r\n"
                               "Hello World\n";

int main(void)
{
    return write(1, response, sizeof response - 1) == sizeof response - 1 ? 0 : 1;
}
