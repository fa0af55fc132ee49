# frozen_string_literal: true

# Loaded by scripts/pgcat-suite.sh with `rspec --require`. Bounds each example
# (with its before/after hooks) to EXAMPLE_TIMEOUT seconds (default 180), so
# that a spec waiting forever for something the pooler never does (e.g. a log
# line) fails that one example instead of hanging the whole spec file.
require 'timeout'

PGCAT_SUITE_EXAMPLE_TIMEOUT = Integer(ENV.fetch('EXAMPLE_TIMEOUT', '180'))

RSpec.configure do |config|
  config.around(:each) do |example|
    Timeout.timeout(PGCAT_SUITE_EXAMPLE_TIMEOUT, Timeout::Error,
                    "example still running after #{PGCAT_SUITE_EXAMPLE_TIMEOUT}s " \
                    '(pgcat-suite EXAMPLE_TIMEOUT): it waits for something that never happens') do
      example.run
    end
  end
end
