#!/usr/bin/env node
'use strict';
require('../dist/shim/src/main.js');
