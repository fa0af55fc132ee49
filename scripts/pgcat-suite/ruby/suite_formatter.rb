# frozen_string_literal: true

# RSpec formatter for scripts/pgcat-suite.sh: one line per example, flushed as
# soon as the example ends, so results survive a run killed by `timeout`.
#   START<TAB>full description<TAB>location
#   PASS|FAIL|SKIP<TAB>full description<TAB>location<TAB>message (FAIL/SKIP)
class PgcatSuiteFormatter
  RSpec::Core::Formatters.register self, :example_started, :example_passed,
                                   :example_failed, :example_pending

  def initialize(output)
    @output = output
  end

  def example_started(notification)
    emit('START', notification.example)
  end

  def example_passed(notification)
    emit('PASS', notification.example)
  end

  def example_pending(notification)
    emit('SKIP', notification.example, notification.example.execution_result.pending_message)
  end

  def example_failed(notification)
    ex = notification.example.execution_result.exception
    msg = ex ? "#{ex.class}: #{ex.message.split(' with backtrace:').first}" : 'failed'
    emit('FAIL', notification.example, msg)
  end

  private

  def clean(str)
    str.to_s.gsub(/\e\[[\d;]*m/, '').gsub(/\s+/, ' ').strip
  end

  def emit(status, example, msg = nil)
    fields = [status, clean(example.full_description), example.location]
    fields << clean(msg)[0, 600] if msg
    @output.puts fields.join("\t")
    @output.flush
  end
end
