<?php header("Content-Type: text/plain"); header("Content-Length: 12"); echo "Hello World\n";
