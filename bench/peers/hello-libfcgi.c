/* Hello-world FastCGI responder with libfcgi (apt libfcgi-dev), the C baseline.
 * FCGI_Accept() serves the listening socket on fd 0, one connection at a time.
 * Build: gcc -O2 -o hello-libfcgi hello-libfcgi.c -lfcgi */
#include "fcgi_stdio.h"

int main(void)
{
    while (FCGI_Accept() >= 0) {
        printf("Status: 200 OK\r\n"
               "Content-Type: text/plain\r\n"
               "Content-Length: 12\r\n"
               "\r\n"
               "Hello World\n");
    }
    return 0;
}
