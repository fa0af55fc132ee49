# frozen_string_literal: true

# Loaded with `ruby -r` before pgcat's tests/ruby/tests.rb.
# Debian ships ActiveRecord 6.1, pgcat's tests.rb declares
# `ActiveRecord::Migration[7.0]`. The migration it defines only uses
# `connection.execute`, so treating 7.0 as the current (6.1) migration API is
# behaviour-neutral for what the test exercises.
require 'active_record'

compat = ActiveRecord::Migration::Compatibility
%w[V7_0 V7_1 V7_2].each do |v|
  compat.const_set(v, ActiveRecord::Migration::Current) unless compat.const_defined?(v, false)
end
